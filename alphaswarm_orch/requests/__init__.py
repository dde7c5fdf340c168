"""Requests from alphaswarm-core: versioned models and the stream reader sensors share.

Wire format: one Redis stream per family (`control.keys.request_stream(family)`, families
paper, hft, terraform); each entry has one field, `payload`, holding a JSON object:

    {"schema_version": 1, "type": "paper.start", "request_id": "r-1", "actor": "alice",
     "session_id": "s1", "symbols": ["BTC-USD"], "starting_cash": 100000}

Types: `paper.start`/`paper.stop`, `hft.start`/`hft.stop` (SessionStart/SessionStop fields),
`terraform.action` (`workspace`, `action` plan|apply|destroy, `variables`, `plan_id` required
for apply and only for apply). Unknown fields are errors.

API:
- `read_requests(client, family, cursor, *, count=100, check=None, max_bytes=MAX_REQUEST_BYTES)
  -> ReadBatch(requests=[ReceivedRequest(stream_id, request)], cursor, dead_letters)`.
  Reads entries after `cursor` (a stream id; None = from the start). Every malformed entry
  (no payload, oversized, not UTF-8/JSON/object, unsupported schema_version, unknown type,
  invalid fields, or `check(request)` returning a reason) goes to
  `control.keys.dead_letter_stream(family)` with `reason`, the original `payload`,
  `source_stream`, `source_id` (the dead-letter entry reuses the source id, so re-reading
  never duplicates it). The returned cursor is the last entry read: store it as the sensor
  cursor. The caller dedups by `request.request_id` (use it as the run_key).
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
