"""The one place private upstream internals are imported (Dagster, Celery and kombu,
prometheus-client), each with a contract test in tests/compat/ against the pinned versions.

Everything else in the package imports these names from here or uses the upstream's public
API; tests/test_architecture.py fails on a private upstream import anywhere else. When an
upgrade breaks one of them, tests/compat/ says which and what it expected.
"""
