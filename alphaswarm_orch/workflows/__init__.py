"""WorkflowRuntime: declarative workflow specs, their light steps and the dispatch client.

The Dagster side (one job per spec) lives in `alphaswarm_orch.defs.workflows`.
"""
