"""Celery workers: the app (built from the Flask app), thin tasks, and the per-cluster lock."""
