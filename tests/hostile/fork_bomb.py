"""Forks until it cannot."""

import os

while True:
    os.fork()
