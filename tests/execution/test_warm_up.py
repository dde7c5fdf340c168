"""A pool process's warm-up opens the instance a run's steps name, and loads the code."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from alphaswarm_orch.execution import tasks


@pytest.fixture
def fresh_caches():
    saved = dict(tasks._instances)
    tasks._instances.clear()
    yield
    for instance in tasks._instances.values():
        instance.dispose()
    tasks._instances.clear()
    tasks._instances.update(saved)


def test_warm_up_opens_the_instance_the_run_loop_sends_the_ref_of(
    orch_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, fresh_caches: None
) -> None:
    for name, value in orch_env.items():
        monkeypatch.setenv(name, value)
    tasks.warm_process("alphaswarm_orch.definitions")
    # The run process opens $DAGSTER_HOME's instance and sends its ref with every step: the
    # step finds the instance the warm-up opened instead of opening another.
    with dg.DagsterInstance.get() as run_instance:
        key = serialize_value(run_instance.get_ref())
    assert list(tasks._instances) == [key]
    assert tasks._instance(run_instance.get_ref()) is tasks._instances[key]


def test_warm_up_failure_is_left_to_the_step(
    monkeypatch: pytest.MonkeyPatch, tmp_path, fresh_caches: None
) -> None:
    (tmp_path / "dagster.yaml").write_text(
        "storage:\n  custom:\n    module: no_such_storage_module\n    class: Storage\n"
    )
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    tasks.warm_process("alphaswarm_orch.definitions")  # logged, not raised
    assert tasks._instances == {}
