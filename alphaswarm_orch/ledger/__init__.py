"""The `workload_runs` audit ledger: schema, migrations, the event-log mirror, refusals."""
