"""Never finishes importing, using no CPU: only the wall-clock limit stops it."""

import time

time.sleep(10**6)
