"""One boundary for text that enters from outside: requests, run tags, error text.

Two rules, used everywhere a string crosses into the platform:

- `unsafe_reason(value)` refuses (returns a reason naming the character and its position) a
  string carrying NUL, other control characters (tab, newline and carriage return are allowed
  where `multiline=True`) or Unicode bidi/format controls, which can hide what a value says
  in logs and in the UI. Requests that fail it are dead-lettered with that reason.
- `sanitize(value, max_length)` makes any string storable where refusing is not an option
  (a tag someone set in the UI, a step's error text): such characters become visible escapes
  (`\\x00`, `\\u202e`) and an over-long value is cut, with a marker saying how much was cut.

Postgres `text`/`varchar` cannot hold NUL at all; the ledger's bounded columns hold
`TAG_MAX_LENGTH` characters.
"""

from __future__ import annotations

import unicodedata

TAG_MAX_LENGTH = 255
"""Longest tag value (actor, request id, trigger detail) the ledger stores as it is."""

_ALLOWED_MULTILINE = frozenset("\t\n\r")


def _is_unsafe(char: str, multiline: bool) -> bool:
    if multiline and char in _ALLOWED_MULTILINE:
        return False
    category = unicodedata.category(char)
    # Cc: C0/C1 controls incl. NUL and DEL; Cf: format controls incl. the bidi overrides
    # (U+202A-U+202E, U+2066-U+2069), zero-width joiners and the BOM; Cs: lone surrogates,
    # which cannot be encoded as UTF-8 at all.
    return category in ("Cc", "Cf", "Cs")


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def unsafe_reason(value: str, *, multiline: bool = False) -> str | None:
    """Why `value` may not enter as it is (naming the first bad character), or None."""
    for index, char in enumerate(value):
        if _is_unsafe(char, multiline):
            name = unicodedata.name(char, "control character")
            return f"character {_escape(char)} ({name}) at position {index} is not allowed"
    return None


def sanitize(value: str, max_length: int | None = None, *, multiline: bool = False) -> str:
    """`value` with unsafe characters escaped and cut to `max_length` characters."""
    if any(_is_unsafe(char, multiline) for char in value):
        value = "".join(_escape(c) if _is_unsafe(c, multiline) else c for c in value)
    if max_length is not None and len(value) > max_length:
        marker = f"...[{len(value) - max_length} more chars]"
        keep = max(max_length - len(marker), 0)
        cut = len(value) - keep
        marker = f"...[{cut} more chars]"
        value = (value[:keep] + marker)[:max_length]
    return value
