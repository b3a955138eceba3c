"""Keras implementations of the methods, one sub-package per suite (see METHODS.md)."""
