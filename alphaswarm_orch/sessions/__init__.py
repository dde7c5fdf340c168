"""Paper and HFT sessions: one run per session whose op consumes `ticks:<session>`.

- `ticks`: the tick format (`symbol`, `price`, optional `tick_id`, `orders`, `sent_at`).
- `lease`: one owner per session (Redis lease + fencing token checked by every write).
- `loop.SessionLoop`: takes the lease, consumes through the consumer group (pending claimed
  first), acks together with the stop checks; stops on a stop request, the kill switch,
  SIGTERM, the worker's handoff flag (`handoff`), or a lost lease.
- `simulator.PaperSimulator`: order intents fill against the tick; fills, positions and PnL
  in SQL (the ledger database, tables in `schema`), idempotent by tick id, fenced.
- `status`: what each session does (state, owner, lag) for the CLI and the metrics.
- `jobs.build_session_job(family)`, `sensors.build_request_sensor(family, job)`: the Dagster
  side, used by `defs/paper` and `defs/hft`; a session's step re-runs itself after a handoff
  or a worker loss.
"""
