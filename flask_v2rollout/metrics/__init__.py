"""Counting calculations per process and merging them in SQL."""
