"""Requests from alphaswarm-core: versioned models and the stream reader sensors share.

Wire format: one Redis stream per family (`control.keys.request_stream(family)`, families
paper, hft, terraform); each entry has one field, `payload`, holding a JSON object:

    {"schema_version": 1, "type": "paper.start", "request_id": "r-1", "actor": "alice",
     "session_id": "s1", "symbols": ["BTC-USD"], "starting_cash": 100000}

Types: `paper.start`/`paper.stop`, `hft.start`/`hft.stop` (SessionStart/SessionStop fields),
`terraform.action` (`workspace`, `action` plan|apply|destroy, `variables`, `plan_id` required
for apply and only for apply). Unknown fields are errors.

Every string in a request passes `text.unsafe_reason` (NUL, control, bidi characters are
refused naming the field and character); a key repeated in one JSON object is refused.

API:
- `read_requests(client, family, cursor, *, count=100, check=None, max_bytes=MAX_REQUEST_BYTES)
  -> ReadBatch(requests=[ReceivedRequest(stream_id, request)], cursor, dead_letters,
  unresolved)`. Reads entries after `cursor` (a stream id; None = from the start). Every
  refused entry (no payload, oversized, not UTF-8/JSON/object, duplicate keys, unsupported
  schema_version, unknown type, invalid or unsafe fields, a request id already used for
  different content, or `check(request)` returning a reason) goes to
  `control.keys.dead_letter_stream(family)` with a sanitised `reason`, a bounded `payload`
  (terraform variable values redacted), `payload_bytes`, `source_stream`, `source_id` (the
  dead-letter entry reuses the source id, so re-reading never duplicates it; the stream is
  trimmed to about DEAD_LETTER_MAXLEN). The returned cursor is the last entry resolved: store
  it as the sensor cursor. If Redis refuses a dead letter or a check, the batch stops before
  that entry (`unresolved`). The caller dedups by `request.request_id` (use it as run_key).
- `launchable.run_request_problem(job, run_request)`: why Dagster could not create that run
  (checked in a sensor's `check`, so the cursor never passes a request whose run fails).
- `parse_request(family, payload)` -> a model, or `InvalidRequest` whose message is the reason.
- `append_request(client, request)` -> stream id (used by `alphaswarm-orch submit`).
"""

from alphaswarm_orch.requests.models import (
    SCHEMA_VERSIONS,
    HftStart,
    HftStop,
    PaperStart,
    PaperStop,
    Request,
    SessionStart,
    SessionStop,
    TerraformRequest,
)
from alphaswarm_orch.requests.reader import (
    DEAD_LETTER_MAXLEN,
    DEAD_LETTER_PAYLOAD_BYTES,
    MAX_REQUEST_BYTES,
    DeadLetter,
    InvalidRequest,
    ReadBatch,
    ReceivedRequest,
    append_request,
    parse_request,
    read_requests,
)

__all__ = [
    "DEAD_LETTER_MAXLEN",
    "DEAD_LETTER_PAYLOAD_BYTES",
    "MAX_REQUEST_BYTES",
    "SCHEMA_VERSIONS",
    "DeadLetter",
    "HftStart",
    "HftStop",
    "InvalidRequest",
    "PaperStart",
    "PaperStop",
    "ReadBatch",
    "ReceivedRequest",
    "Request",
    "SessionStart",
    "SessionStop",
    "TerraformRequest",
    "append_request",
    "parse_request",
    "read_requests",
]
