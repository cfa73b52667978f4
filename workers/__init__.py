"""Celery: the app (``workers.app``) and one small module of tasks per queue."""
