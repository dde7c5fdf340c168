"""`python -m benchmarks.scale --small` works: it exits 0 with a table that has every curve and
point, finite positive numbers, and a real PNG per curve. Timings are not checked."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.scale import SMALL
from tests.support.runs import REPO

CAN_BE_ZERO = {"Postgres connections per session"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIZES: dict[str, list[int | str]] = {
    "fanout": list(SMALL.fanout),
    "queue": list(SMALL.queue),
    "sessions": list(SMALL.sessions),
    "idle": ["idle"],
    "ledger": list(SMALL.ledger),  # requested; the backlog is whole copies of 8 template runs
}


@pytest.mark.benchmark_smoke
@pytest.mark.timeout(900)
def test_scale_small_writes_every_curve_and_point(
    redis_urls: tuple[str, str], tmp_path: Path
) -> None:
    # The databases of this test process (each xdist worker has its own pair); the benchmark
    # flushes them, so no other test process's may be named here.
    redis_db = redis_urls[0].rsplit("/", 1)[1]
    argv = [sys.executable, "-m", "benchmarks.scale", "--small", "--out", str(tmp_path)]
    result = subprocess.run(
        [*argv, "--redis-db", redis_db],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]

    table = (tmp_path / "scale.md").read_text()
    assert table.strip() in result.stdout
    curves = json.loads((tmp_path / "scale.json").read_text())
    assert set(curves) == set(SIZES)
    for key, curve in curves.items():
        expected = SIZES[key]
        if key == "ledger":  # whole copies: within 8 runs of each size asked for
            assert all(abs(a - b) < 8 for a, b in zip(curve["sizes"], expected, strict=True))
        else:
            assert curve["sizes"] == expected, key
        assert f"### {curve['title']}" in table
        values = {(size, system, measure): v for size, system, measure, v in curve["values"]}
        for size in curve["sizes"]:
            for measure in curve["measures"]:
                row = next(
                    (
                        line
                        for line in table.splitlines()
                        if line.startswith(f"| {size} | {measure} |")
                    ),
                    None,
                )
                assert row is not None, f"{key}: no row for {size} / {measure}"
                cells = [c.strip() for c in row.strip("|").split("|")][2:]
                assert len(cells) == len(curve["systems"]) + 1, row
                assert "-" not in cells, f"{key}: a point was not measured: {row}"
                for system in curve["systems"]:
                    value = values[(size, system, measure)]
                    assert math.isfinite(value), (key, size, system, measure, value)
                    # a session may open no connection of its own (its pool process's)
                    assert value >= 0 if measure in CAN_BE_ZERO else value > 0, (
                        key,
                        size,
                        system,
                        measure,
                        value,
                    )
        png = tmp_path / f"{key}.png"
        assert png.read_bytes()[:8] == PNG_SIGNATURE, png
