"""Scheduling: the pure algorithm (algorithm.py) and how passes are requested and run."""
