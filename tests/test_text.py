"""The text boundary: what is refused, and what sanitising stores instead."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from alphaswarm_orch.text import TAG_MAX_LENGTH, sanitize, unsafe_reason


def test_nul_control_and_bidi_characters_are_refused_naming_them() -> None:
    assert unsafe_reason("ops\x00team") == (
        "character \\x00 (control character) at position 3 is not allowed"
    )
    assert "\\u202e" in unsafe_reason("admin\u202egnp.exe")
    assert "RIGHT-TO-LEFT OVERRIDE" in unsafe_reason("admin\u202egnp.exe")
    assert unsafe_reason("line\nbreak") is not None
    assert unsafe_reason("line\nbreak", multiline=True) is None
    assert unsafe_reason("Zoë trader-1 ☃") is None


def test_sanitize_escapes_and_cuts_with_a_marker() -> None:
    assert sanitize("a\x00b") == "a\\x00b"
    long = "x" * 300
    cut = sanitize(long, TAG_MAX_LENGTH)
    assert len(cut) == TAG_MAX_LENGTH
    assert cut.endswith("more chars]")
    assert sanitize("short", TAG_MAX_LENGTH) == "short"


@given(st.text(), st.integers(min_value=0, max_value=400))
def test_sanitized_text_is_always_safe_and_bounded(value: str, limit: int) -> None:
    out = sanitize(value, limit)
    assert unsafe_reason(out) is None
    assert len(out) <= limit
    out.encode("utf-8")
