"""Leaderboard: pandas tables from records (tables.py)."""
