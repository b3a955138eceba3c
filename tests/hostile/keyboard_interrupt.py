"""Raises KeyboardInterrupt at import, which `except Exception` does not catch."""

raise KeyboardInterrupt
