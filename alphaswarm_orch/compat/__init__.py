"""Upstream internals the code location depends on, each in one module with a contract test
in tests/compat/: nothing outside this package imports a private upstream name."""
