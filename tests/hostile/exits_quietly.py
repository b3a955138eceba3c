"""Ends the process with status 0 and no output, as if all went well."""

import os

os._exit(0)
