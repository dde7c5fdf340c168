"""Paper and HFT sessions: one run per session whose op consumes `ticks:<session>`.

- `ticks`: the tick format (`symbol`, `price`, optional `tick_id`, `orders`, `sent_at`).
- `loop.SessionLoop`: consumer group, pending claimed on restart, ack pipelined with the
  stop checks; stops on a stop request, the kill switch, or SIGTERM (resumable).
- `simulator.PaperSimulator`: order intents fill against the tick; fills, positions and PnL
  in SQL (the ledger database), idempotent by tick id.
- `jobs.build_session_job(family)`, `sensors.build_request_sensor(family, job)`: the Dagster
  side, used by `defs/paper` and `defs/hft`.
"""
