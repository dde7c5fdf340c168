"""The Celery worker process: the app, health and metrics server, task registration, shutdown
handoff, assembled from `broker`, `control` and `execution` (which do not import each other)."""
