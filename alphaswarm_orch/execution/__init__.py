"""Celery execution: the executor that routes steps by queue, and the worker that runs them."""
