"""`alphaswarm-orch`: the operator command line."""
