"""Counting calculations per process, merging them in SQL, and the catalogue of metrics the rules read."""
