"""Definitions built once in the forkserver (launch/prebuilt.py): reused while what they were
built from holds, built anew by the run worker when it changed, with the run's log saying so."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from alphaswarm_orch.compat.dagster import ReconstructableRepository
from alphaswarm_orch.launch import prebuilt
from alphaswarm_orch.launch.launcher import stop_forkserver
from tests.launch import reusable
from tests.launch.test_launcher import finished, messages

VARIABLE = "ALPHASWARM_TEST_PREBUILT_VARIABLE"
UNSET = "ALPHASWARM_TEST_PREBUILT_UNSET"


class Inputs:
    """A builder's inputs under `root`: a variable, a file it reads, a file it finds missing,
    a folder it lists, a file it writes and reads back (its output)."""

    def __init__(self, root: Path) -> None:
        self.read = root / "spec.yaml"
        self.missing = root / "override.yaml"
        self.folder = root / "specs"
        self.output = root / "state" / "state.json"
        self.read.write_text("name: one\n")
        self.folder.mkdir()
        (self.folder / "a.yaml").write_text("a")

    def build(self) -> dict[str, object]:
        self.output.parent.mkdir(exist_ok=True)
        self.output.write_text("{}")
        return {
            "variable": os.environ.get(VARIABLE),
            "unset": os.getenv(UNSET),
            "read": self.read.read_text(),
            "missing": self.missing.exists(),
            "listed": sorted(p.name for p in self.folder.iterdir()),
            "output": self.output.read_text(),
        }


@pytest.fixture
def inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Inputs:
    monkeypatch.setenv(VARIABLE, "secret-value")
    monkeypatch.delenv(UNSET, raising=False)
    return Inputs(tmp_path)


@pytest.fixture
def stale() -> Iterator[list[tuple[str, list[str]]]]:
    told: list[tuple[str, list[str]]] = []
    prebuilt.when_stale(lambda name, changed: told.append((name, changed)))
    yield told
    prebuilt._STALE_LISTENERS.clear()


def test_a_prebuilt_result_is_reused_while_what_it_read_is_unchanged(
    inputs: Inputs, stale: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    builder = prebuilt.Reusable(inputs.build, None)
    builder.prebuild()
    first = builder()
    monkeypatch.setenv("ALPHASWARM_TEST_UNRELATED", "1")  # not read by the build
    inputs.output.write_text('{"written": "by another process loading the code"}')
    assert builder.reuse() is first
    assert builder() is first
    assert stale == []


def _rewrite_keeping_size_and_times(path: Path) -> None:
    before = path.stat()
    path.write_text("name: two\n")  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda i: _rewrite_keeping_size_and_times(i.read), "spec.yaml"),
        (lambda i: i.missing.write_text("x"), "override.yaml"),
        (lambda i: (i.folder / "b.yaml").write_text("b"), "specs"),
        (lambda i: os.environ.__setitem__(VARIABLE, "other"), f"environment variable {VARIABLE}"),
        (lambda i: os.environ.__setitem__(UNSET, "now set"), f"environment variable {UNSET}"),
    ],
    ids=["file rewritten", "missing file created", "folder listed", "variable", "unset variable"],
)
def test_a_change_to_what_it_read_makes_it_build_anew_saying_what_changed(
    inputs: Inputs, stale: list, monkeypatch: pytest.MonkeyPatch, change, named: str
) -> None:
    monkeypatch.setenv(UNSET, "placeholder")  # restored (unset) after the test
    monkeypatch.delenv(UNSET)
    builder = prebuilt.Reusable(inputs.build, None)
    builder.prebuild()
    first = builder()
    change(inputs)
    assert builder.reuse() is None
    fresh = builder()
    assert fresh is not first
    assert fresh == inputs.build()
    [(name, changed)] = stale
    assert name == f"{__name__}.Inputs.build"
    assert [c for c in changed if c.endswith(named)] == changed, changed
    assert not any("secret-value" in c or "other" in c for c in changed)  # names, not values


def test_a_build_that_fails_leaves_nothing_to_reuse(
    capfd: pytest.CaptureFixture[str], stale: list
) -> None:
    def broken() -> object:
        raise ValueError("the spec is broken")

    builder = prebuilt.Reusable(broken, None)
    builder.prebuild()
    assert "could not prebuild" in capfd.readouterr().err
    assert builder.reuse() is None
    with pytest.raises(ValueError, match="the spec is broken"):
        builder()  # the run worker builds it, and fails the same way


def test_recording_touches_only_the_building_thread_and_ends_with_the_build(
    inputs: Inputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    originals = (os.stat, os.listdir, os.scandir, open, type(os.environ).__getitem__)
    seen: list[str | None] = []

    def build() -> dict[str, object]:
        reader = threading.Thread(target=lambda: seen.append(os.environ.get("HOME")))
        reader.start()
        reader.join()
        return inputs.build()

    builder = prebuilt.Reusable(build, None)
    builder.prebuild()
    assert (os.stat, os.listdir, os.scandir, open, type(os.environ).__getitem__) == originals
    monkeypatch.setenv("HOME", "/elsewhere")  # read by the other thread only
    assert builder.reuse() is not None


# -- through the launcher's forkserver -------------------------------------------------------


def _launch(instance: dg.DagsterInstance) -> str:
    """Launch a run of `reusable_job`, loaded through `reusable.defs` as the code location's
    runs are; its log."""
    repository = ReconstructableRepository.for_module("tests.launch.reusable", "defs")
    job = reusable.defs().get_job_def("reusable_job")
    origin = repository.get_reconstructable_job("reusable_job").get_python_origin()
    run = instance.create_run_for_job(job_def=job, job_code_origin=origin)
    instance.launch_run(run.run_id, workspace=None)  # type: ignore[arg-type]
    run = finished(instance, run.run_id)
    log = messages(instance, run.run_id)
    assert run.status == dg.DagsterRunStatus.SUCCESS, log
    return log


def test_run_workers_use_the_forkserver_s_definitions_and_instance_until_an_input_changes(
    orch_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Path(orch_env["DAGSTER_HOME"]) / "dagster.yaml"
    config = yaml.safe_load(home.read_text())
    config["run_launcher"]["config"]["preload_modules"] = [
        "alphaswarm_orch.launch.worker",  # the instance builder
        "tests.launch.preload_sets",
        "tests.launch.reusable",
    ]
    home.write_text(yaml.safe_dump(config))
    spec = tmp_path / "reusable.txt"
    spec.write_text("first")
    for name, value in orch_env.items():
        if name.startswith(("ALPHASWARM_", "DAGSTER_")):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv(reusable.INPUT, str(spec))
    monkeypatch.delenv(reusable.PRELOAD_SETS, raising=False)
    for name in ("COLUMNS", "LINES"):
        # readline (which pytest imports) exports these to the C environment only, which the
        # forkserver starts with: the instance's build reads them, the launcher's os.environ
        # lacks them, and run workers would (rightly) build their own instance.
        if name not in os.environ:
            os.unsetenv(name)
    stop_forkserver()  # a forkserver of an earlier test preloaded other modules
    try:
        with dg.DagsterInstance.get() as instance:
            log = _launch(instance)
            [(built, text, ran)] = re.findall(r"built in (\d+) from '(\w+)'; run in (\d+)", log)
            assert built != ran and text == "first"  # built by the forkserver, before the run
            assert "forkserver's instance: True" in log
            assert 'preload set "by the forkserver\'s preload"' in log
            assert "Building" not in log

            spec.write_text("second")
            log = _launch(instance)
            [(built, text, ran)] = re.findall(r"built in (\d+) from '(\w+)'; run in (\d+)", log)
            assert built == ran and text == "second"  # built by the run worker, from the change
            assert (
                "Building tests.launch.reusable.defs for this run: the forkserver's "
                f"copy is out of date ({spec} changed since it was built" in log
            )
    finally:
        stop_forkserver()
