"""Never finishes importing: a busy loop."""

while True:
    pass
