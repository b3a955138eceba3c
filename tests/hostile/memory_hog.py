"""Allocates 64 GiB."""

hog = bytearray(64 * 2**30)
