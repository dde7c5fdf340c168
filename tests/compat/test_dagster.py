"""Contracts of the Dagster internals in alphaswarm_orch.compat.dagster,
each exercised the way the package uses it, against the pinned versions."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg2
import pytest
import sqlalchemy
from dagster._core.remote_origin import (
    InProcessCodeLocationOrigin,
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteInstigatorOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.remote_representation.grpc_server_registry import (
    GrpcServerRegistry,
    ServerRegistryEntry,
)
from dagster._core.scheduler.instigation import (
    InstigatorState,
    InstigatorStatus,
    InstigatorType,
    SensorInstigatorData,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._daemon import controller
from dagster._daemon import sensor as sensor_daemon
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from alphaswarm_orch.compat import dagster as compat
from alphaswarm_orch.daemon.wakeup import WakingDequeueDaemon, WakingSensorDaemon, install
from tests.compat.contract import broken, check_all_covered, has_members, parameters, run_contract
from tests.support.runs import wait_for

SMALL_DEFS = Path(__file__).with_name("small_defs.py")
"""A code location that loads in a code server quickly."""


def _fail(name: str, what: str, dist: str = "dagster") -> str:
    return broken(compat, name, dist, what)


def _concrete_subclass_of(base: type, cls: type, name: str) -> None:
    assert issubclass(cls, base), _fail(name, f"{cls.__name__} no longer subclasses it")
    assert not inspect.isabstract(cls), _fail(
        name, f"{cls.__name__} misses abstract members: {sorted(cls.__abstractmethods__)}"
    )


def storage_classes(tmp_path: Path) -> None:
    """EmbeddedSqliteStorage builds one SQLite store from these; EnvironmentStorage picks."""
    from alphaswarm_orch.instance import EmbeddedSqliteStorage, EnvironmentStorage

    _concrete_subclass_of(compat.DagsterStorage, EmbeddedSqliteStorage, "DagsterStorage")
    assert issubclass(EnvironmentStorage, compat.ConfigurableClass), _fail(
        "ConfigurableClass", "EnvironmentStorage no longer is one"
    )
    runs = compat.SqliteRunStorage.from_local(str(tmp_path / "history"))
    events = compat.ConsolidatedSqliteEventLogStorage(str(tmp_path / "history"))
    schedules = compat.SqliteScheduleStorage.from_local(str(tmp_path / "schedules"))
    assert isinstance(runs, compat.RunStorage), _fail("SqliteRunStorage", "not a RunStorage")
    assert isinstance(events, compat.EventLogStorage), _fail(
        "ConsolidatedSqliteEventLogStorage", "not an EventLogStorage"
    )
    assert isinstance(schedules, compat.ScheduleStorage), _fail(
        "SqliteScheduleStorage", "not a ScheduleStorage"
    )
    sharded = compat.DagsterSqliteStorage.from_local(str(tmp_path / "sharded"))
    assert isinstance(sharded, compat.DagsterStorage), _fail(
        "DagsterSqliteStorage", "from_local() no longer gives a DagsterStorage"
    )
    data = compat.ConfigurableClassData("alphaswarm_orch.instance", "EnvironmentStorage", "{}")
    assert data.module_name == "alphaswarm_orch.instance", _fail(
        "ConfigurableClassData", "fields module_name/class_name/config_yaml changed"
    )


def compute_log_base() -> None:
    from alphaswarm_orch.execution.compute_logs import ThreadedComputeLogManager

    _concrete_subclass_of(
        compat.LocalComputeLogManager, ThreadedComputeLogManager, "LocalComputeLogManager"
    )
    assert compat.IO_TYPE_EXTENSION[compat.ComputeIOType.STDOUT] == "out", _fail(
        "IO_TYPE_EXTENSION", "stdout files no longer end in .out"
    )
    assert compat.IO_TYPE_EXTENSION[compat.ComputeIOType.STDERR] == "err", _fail(
        "IO_TYPE_EXTENSION", "stderr files no longer end in .err"
    )
    context = compat.CapturedLogContext(["run", "step"])
    assert list(context.log_key) == ["run", "step"], _fail("CapturedLogContext", "log_key")


def file_helpers(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.log"
    compat.ensure_file(str(path))
    assert path.is_file(), _fail("ensure_file", "did not create the file and its directory")
    done = tmp_path / "done"
    compat.touch_file(str(done))
    assert done.exists(), _fail("touch_file", "did not create the file")


def launcher_base() -> None:
    from alphaswarm_orch.launch import ForkserverRunLauncher

    _concrete_subclass_of(compat.RunLauncher, ForkserverRunLauncher, "RunLauncher")
    assert issubclass(ForkserverRunLauncher, compat.ConfigurableClass), _fail(
        "ConfigurableClass", "the launcher is configured from dagster.yaml through it"
    )
    result = compat.CheckRunHealthResult(compat.WorkerStatus.RUNNING, run_worker_id="1")
    assert result.status is compat.WorkerStatus.RUNNING, _fail("CheckRunHealthResult", "status")
    assert has_members(compat.WorkerStatus, ["RUNNING", "UNKNOWN", "FAILED", "NOT_FOUND"]) == []
    assert issubclass(compat.DagsterLaunchFailedError, Exception)
    for name, context in [
        ("LaunchRunContext", compat.LaunchRunContext),
        ("ResumeRunContext", compat.ResumeRunContext),
    ]:
        assert "dagster_run" in parameters(context), _fail(name, "no dagster_run field")


def run_bodies() -> None:
    for resume in (False, True):
        body = compat.run_command_body(resume)
        params = parameters(body)
        assert params[:3] == ["run_id", "instance", "write_stream_fn"], _fail(
            "run_command_body", f"parameters are {params}"
        )
        assert "set_exit_code_on_failure" in params, _fail(
            "run_command_body", "set_exit_code_on_failure is gone"
        )


def interrupts() -> None:
    with compat.capture_interrupts():
        pass


def error_info() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        info = compat.serializable_error_info_from_exc_info(sys.exc_info())
    assert isinstance(info, compat.SerializableErrorInfo)
    assert "boom" in info.message and info.cls_name == "ValueError", _fail(
        "serializable_error_info_from_exc_info", f"gave {info!r}"
    )
    event = compat.EngineEventData.engine_error(info)
    assert event.error == info, _fail("EngineEventData", "engine_error() no longer keeps it")
    packed = compat.pack_value(info)
    assert compat.unpack_value(packed, as_type=compat.SerializableErrorInfo) == info, _fail(
        "pack_value", "pack/unpack does not round-trip"
    )


def cron() -> None:
    assert compat.is_valid_cron_string("0 6 * * 1-5"), _fail("is_valid_cron_string", "refused")
    assert not compat.is_valid_cron_string("every day"), _fail(
        "is_valid_cron_string", "accepted 'every day'"
    )


@dg.asset
def _compat_asset() -> int:
    return 1


def asset_job_and_graph() -> None:
    job = dg.define_asset_job("compat_job", selection=[_compat_asset])
    assert isinstance(job, compat.UnresolvedAssetJobDefinition), _fail(
        "UnresolvedAssetJobDefinition", f"define_asset_job gives {type(job).__name__}"
    )
    graph = dg.Definitions(assets=[_compat_asset], jobs=[job]).resolve_asset_graph()
    assert isinstance(graph, compat.BaseAssetGraph), _fail(
        "BaseAssetGraph", f"resolve_asset_graph() gives {type(graph).__name__}"
    )


def step_execution() -> None:
    """The step task's path: a reconstructable job, a plan, the plan iterator, the args."""
    assert has_members(compat.ReconstructableJob, ["from_dict", "get_definition"]) == []
    assert has_members(compat.ReconstructableRepository, ["for_module"]) == []
    assert has_members(compat.InstanceRef, ["from_dir"]) == []
    for name, func, wanted in [
        ("create_execution_plan", compat.create_execution_plan, ["job", "run_config"]),
        ("execute_plan_iterator", compat.execute_plan_iterator, ["execution_plan", "job"]),
    ]:
        missing = [p for p in wanted if p not in parameters(func)]
        assert not missing, _fail(name, f"parameters {missing} are gone")
    fields = set(parameters(compat.ExecuteStepArgs))
    wanted = {
        "job_origin",
        "run_id",
        "step_keys_to_execute",
        "instance_ref",
        "retry_mode",
        "known_state",
        "print_serialized_events",
    }
    assert wanted <= fields, _fail("ExecuteStepArgs", f"fields {sorted(wanted - fields)} gone")


@dg.op(out=dg.DynamicOut(str))
def _compat_emit() -> Iterator[dg.DynamicOutput[str]]:
    yield from (dg.DynamicOutput(key, mapping_key=key) for key in "xy")


@dg.op(config_schema={"n": int})
def _compat_configured(context) -> int:  # Dagster rejects a string-annotated context
    return context.op_config["n"]


@dg.op
def _compat_upper(value: str) -> str:
    return value.upper()


@dg.op
def _compat_count(values: list[str]) -> int:
    return len(values)


@dg.job
def _compat_dynamic_job() -> None:
    _compat_configured()
    _compat_count(_compat_emit().map(_compat_upper).collect())


def run_config_memo() -> None:
    """Dagster's step context creation resolves the run config through the module name
    `ResolvedRunConfig.build`; once memoized, the same (job, config) resolves once and a
    different config still resolves to its own values."""
    from dagster._core.execution import context_creation_job

    source = inspect.getsource(context_creation_job.create_context_creation_data)
    assert "ResolvedRunConfig.build(job_def, run_config)" in source, _fail(
        "memoize_step_run_config",
        "create_context_creation_data no longer calls ResolvedRunConfig.build(job_def, ...)",
    )
    compat.memoize_step_run_config()
    compat.memoize_step_run_config()  # idempotent: not wrapped twice
    memo = context_creation_job.ResolvedRunConfig
    assert memo is not compat.ResolvedRunConfig
    configs = [{"ops": {"_compat_configured": {"config": {"n": n}}}} for n in (1, 2)]
    first = memo.build(_compat_dynamic_job, configs[0])
    assert memo.build(_compat_dynamic_job, configs[0]) is first
    assert first.ops["_compat_configured"].config == {"n": 1}
    second = memo.build(_compat_dynamic_job, configs[1])
    assert second.ops["_compat_configured"].config == {"n": 2}


def plan_from_cache() -> None:
    """A step's plan derived from the cached whole-job plan (ResolvedRunConfig, the plan's
    resolve/build_subset_plan, KnownExecutionState's fields) equals the full build's, for
    plain, retried, mapped and collect steps and two run configs."""
    from alphaswarm_orch.execution.plans import PlanCache

    cache = PlanCache(size=1)  # the second config evicts the first: both paths exercised
    mapped = {"_compat_emit": {"result": ["x", "y"]}}
    cases = [
        (None, "_compat_emit"),
        (
            compat.KnownExecutionState(previous_retry_attempts={"_compat_configured": 1}),
            "_compat_configured",
        ),
        (
            compat.KnownExecutionState(
                dynamic_mappings=mapped, previous_retry_attempts={"_compat_upper[y]": 1}
            ),
            "_compat_upper[y]",
        ),
        (compat.KnownExecutionState(dynamic_mappings=mapped), "_compat_count"),
    ]
    for n in (1, 2):
        run_config = {"ops": {"_compat_configured": {"config": {"n": n}}}}
        resolved = compat.ResolvedRunConfig.build(_compat_dynamic_job, run_config)
        assert resolved.ops["_compat_configured"].config == {"n": n}
        for known_state, step_key in cases:
            full = compat.create_execution_plan(
                _compat_dynamic_job,
                run_config,
                step_keys_to_execute=[step_key],
                known_state=known_state,
            )
            derived = cache.step_plan("job", _compat_dynamic_job, run_config, step_key, known_state)
            assert derived == full, _fail(
                "KnownExecutionState", f"the derived plan of {step_key} differs from the full one"
            )
            assert derived.step_keys_to_execute == [step_key]
        assert len(cache) == 1


def run_loop_machinery() -> None:
    """What the run loop drives: the active execution, concurrency slots, step data."""
    methods = [
        "check_for_interrupts",
        "get_known_state",
        "get_steps_to_execute",
        "handle_event",
        "is_complete",
        "mark_interrupted",
        "plan_events_iterator",
        "rebuild_from_events",
        "retry_state",
        "verify_complete",
    ]
    missing = has_members(compat.ActiveExecution, methods)
    assert not missing, _fail("ActiveExecution", f"methods {missing} are gone")
    assert has_members(compat.InstanceConcurrencyContext, ["__enter__", "__exit__"]) == []
    assert {"error", "user_failure_data"} <= set(parameters(compat.StepFailureData))
    assert {"error", "seconds_to_wait"} <= set(parameters(compat.StepRetryData))
    assert (
        has_members(
            compat.ExecutionPlan,
            [
                "get_step_by_key",
                "step_keys_to_execute",
                "artifacts_persisted",
                "start",
                "build",
                "resolve",
                "build_subset_plan",
            ],
        )
        == []
    )
    assert has_members(compat.ExecutionStep, ["key", "tags"]) == [], _fail("ExecutionStep", "key")
    context = ["dagster_run", "executor", "instance", "reconstructable_job", "resume_from_failure"]
    missing = has_members(compat.PlanOrchestrationContext, context)
    assert not missing, _fail("PlanOrchestrationContext", f"{missing} are gone")


def retries() -> None:
    mode = compat.RetryMode.from_config({"enabled": {}})
    assert mode is compat.RetryMode.ENABLED, _fail("RetryMode", f"from_config gave {mode}")
    assert isinstance(compat.get_retries_config(), dg.Field), _fail(
        "get_retries_config", "no longer the executor's `retries` config field"
    )


def sensor_loop() -> None:
    """Setting the module constant works because the loop reads it on every iteration."""
    from dagster._daemon import sensor  # the module the compat function patches

    source = inspect.getsource(sensor)
    assert source.count("MIN_INTERVAL_LOOP_TIME") >= 2, _fail(
        "set_sensor_loop_seconds", "the sensor loop no longer reads MIN_INTERVAL_LOOP_TIME"
    )
    before = compat.sensor_loop_seconds()
    assert before == 5, _fail("sensor_loop_seconds", f"Dagster's default is now {before}")
    try:
        compat.set_sensor_loop_seconds(0.5)
        assert compat.sensor_loop_seconds() == 0.5
    finally:
        compat.set_sensor_loop_seconds(before)


def daemon_command() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from alphaswarm_orch.compat.dagster import run_daemon\n"
            "run_daemon(['--help'], prog_name='x')",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "--workspace" in result.stdout + result.stderr, _fail(
        "run_daemon", f"`dagster-daemon run --help` gave {result.returncode}: {result.stderr}"
    )


def preload_modules() -> None:
    compat.import_run_worker_modules()
    assert all(name in sys.modules for name in compat.RUN_WORKER_MODULES)


CONTRACTS = {
    storage_classes: [
        "DagsterStorage",
        "ConsolidatedSqliteEventLogStorage",
        "EventLogStorage",
        "RunStorage",
        "SqliteRunStorage",
        "ScheduleStorage",
        "SqliteScheduleStorage",
        "DagsterSqliteStorage",
        "ConfigurableClass",
        "ConfigurableClassData",
    ],
    compute_log_base: [
        "LocalComputeLogManager",
        "IO_TYPE_EXTENSION",
        "ComputeIOType",
        "CapturedLogContext",
    ],
    file_helpers: ["ensure_file", "touch_file"],
    launcher_base: [
        "RunLauncher",
        "CheckRunHealthResult",
        "WorkerStatus",
        "DagsterLaunchFailedError",
        "LaunchRunContext",
        "ResumeRunContext",
    ],
    run_bodies: ["run_command_body"],
    interrupts: ["capture_interrupts"],
    error_info: [
        "SerializableErrorInfo",
        "serializable_error_info_from_exc_info",
        "EngineEventData",
        "pack_value",
        "unpack_value",
    ],
    cron: ["is_valid_cron_string"],
    asset_job_and_graph: ["UnresolvedAssetJobDefinition", "BaseAssetGraph"],
    step_execution: [
        "ReconstructableJob",
        "ReconstructableRepository",
        "InstanceRef",
        "create_execution_plan",
        "execute_plan_iterator",
        "ExecuteStepArgs",
    ],
    run_loop_machinery: [
        "ActiveExecution",
        "InstanceConcurrencyContext",
        "StepFailureData",
        "StepRetryData",
        "ExecutionPlan",
        "ExecutionStep",
        "PlanOrchestrationContext",
    ],
    retries: ["RetryMode", "get_retries_config"],
    plan_from_cache: ["KnownExecutionState", "ResolvedRunConfig"],
    run_config_memo: ["memoize_step_run_config"],
    sensor_loop: ["set_sensor_loop_seconds", "sensor_loop_seconds"],
    daemon_command: ["run_daemon"],
    preload_modules: ["RUN_WORKER_MODULES", "import_run_worker_modules"],
}
"""Each contract and the compat names it covers."""


COORDINATOR = {
    "run_coordinator": {
        "module": "alphaswarm_orch.daemon.coordinator",
        "class": "WakingQueuedRunCoordinator",
        "config": {"dequeue_interval_seconds": 1},
    }
}


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The module functions `install` replaces come back after the test."""
    monkeypatch.setattr(controller, "create_daemon_of_type", controller.create_daemon_of_type)
    monkeypatch.setattr(sensor_daemon, "is_under_min_interval", sensor_daemon.is_under_min_interval)
    monkeypatch.setattr(
        sensor_daemon, "MIN_INTERVAL_LOOP_TIME", sensor_daemon.MIN_INTERVAL_LOOP_TIME
    )


def test_prefer_daemons_builds_the_waking_sensor_and_dequeue_daemons(restored: None) -> None:
    install()
    install()  # twice is the same as once (the stock factory is kept, not wrapped again)
    with dg.instance_for_test(overrides=COORDINATOR) as instance:
        daemons = {type(d) for d in controller.create_daemons_from_instance(instance)}
    assert {WakingSensorDaemon, WakingDequeueDaemon} <= daemons
    assert compat.SensorDaemon not in daemons


def test_the_sensor_loop_checks_the_minimum_interval_through_the_module_function(
    restored: None,
) -> None:
    for function in (
        sensor_daemon.execute_sensor_iteration,
        inspect.unwrap(sensor_daemon._process_tick_generator),
    ):
        assert "is_under_min_interval" in function.__code__.co_names, function
    assert list(inspect.signature(sensor_daemon.is_under_min_interval).parameters)[:2] == [
        "state",
        "remote_sensor",
    ]
    asked: list[float | None] = []

    def due(name: str, last: float | None) -> bool:
        assert name == "when_due"
        asked.append(last)
        return last is not None and last < 1000.0

    compat.evaluate_when_due(["when_due"], due)

    class Sensor:
        def __init__(self, name: str) -> None:
            self.name = name
            self.min_interval_seconds = 30

    def state(last_tick: float | None) -> Any:
        data = None
        if last_tick is not None:
            data = SensorInstigatorData(
                last_tick_timestamp=None, last_tick_start_timestamp=last_tick
            )
        return InstigatorState(
            RemoteInstigatorOrigin(_repo_origin(), "when_due"),
            InstigatorType.SENSOR,
            InstigatorStatus.DECLARED_IN_CODE,
            data,
        )

    now = time.time()
    # The named sensor follows `due`, given its last tick's time; others Dagster's rule.
    assert sensor_daemon.is_under_min_interval(state(500.0), Sensor("when_due")) is False
    assert sensor_daemon.is_under_min_interval(state(now - 1), Sensor("when_due")) is True
    assert sensor_daemon.is_under_min_interval(state(None), Sensor("when_due")) is True
    assert asked[0] == pytest.approx(500.0, abs=1) and asked[-1] is None
    assert asked[1] == pytest.approx(now - 1, abs=1)
    assert sensor_daemon.is_under_min_interval(state(now - 1), Sensor("other")) is True
    assert sensor_daemon.is_under_min_interval(state(now - 60), Sensor("other")) is False


def _repo_origin() -> Any:
    return RemoteRepositoryOrigin(
        InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=__file__)), "repo"
    )


def test_the_daemon_refresh_keeps_a_live_code_server_and_replaces_a_dead_one(
    restored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon controller's workspace refresh calls `clear_all_grpc_endpoints` and then
    reloads; kept live, a refresh reuses the running server; a killed one is replaced."""
    source = inspect.getsource(controller.DagsterDaemonController.check_workspace_freshness)
    assert "clear_all_grpc_endpoints" in source and "refresh_workspace" in source
    monkeypatch.setattr(
        GrpcServerRegistry, "clear_all_grpc_endpoints", GrpcServerRegistry.clear_all_grpc_endpoints
    )
    compat.keep_live_code_servers()
    compat.keep_live_code_servers()  # twice is once
    origin = ManagedGrpcPythonEnvCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, python_file=str(SMALL_DEFS)),
        location_name="small",
    )
    with (
        dg.instance_for_test() as instance,
        controller.create_daemon_grpc_server_registry(instance) as registry,
    ):
        first = registry.get_grpc_server_entry(origin)
        assert isinstance(first, ServerRegistryEntry), first
        registry.clear_all_grpc_endpoints()
        assert registry.get_grpc_server_entry(origin) is first  # the same live server
        first.process.server_process.kill()
        first.process.server_process.wait(30)
        registry.clear_all_grpc_endpoints()
        second = registry.get_grpc_server_entry(origin)
        assert isinstance(second, ServerRegistryEntry) and second is not first
        assert second.process.create_client().ping("x")["echo"] == "x"


def test_sensor_evaluations_share_one_instance_per_ref(monkeypatch: pytest.MonkeyPatch) -> None:
    """A code server's sensor context is built from the daemon's instance ref and makes its
    instance (also for the resources) through the `instance` property."""
    monkeypatch.setattr(dg.SensorEvaluationContext, "instance", dg.SensorEvaluationContext.instance)
    compat.share_sensor_instances()
    compat.share_sensor_instances()  # twice is once

    def context(ref: Any) -> dg.SensorEvaluationContext:
        return dg.SensorEvaluationContext(
            instance_ref=ref,
            last_tick_completion_time=None,
            last_run_key=None,
            cursor=None,
            log_key=None,
            repository_name=None,
        )

    with dg.instance_for_test() as first_instance, dg.instance_for_test() as other_instance:
        ref, other = first_instance.get_ref(), other_instance.get_ref()
        with context(ref) as one:
            kept = one.instance
            assert kept.get_ref() == ref
        with context(ref) as two:
            assert two.instance is kept  # the same instance, still usable after the first
            assert kept.get_runs(limit=1) == []
        with context(other) as three:
            assert three.instance is not kept and three.instance.get_ref() == other
        with dg.instance_for_test() as given:  # a context given an instance keeps its own
            assert dg.build_sensor_context(instance=given).instance is given
        assert "instance" in inspect.getsource(dg.SensorEvaluationContext.resources.fget)


def test_schedule_storage_schema_checks_are_answered_once() -> None:
    """Each check is a method of SqlScheduleStorage used by the instigator state reads and
    writes of a sensor tick; cached, the answers stay right and the schema is read once."""
    for name in compat.SCHEDULE_SCHEMA_CHECKS:
        assert callable(getattr(compat.SqlScheduleStorage, name, None)), _fail(
            "SCHEDULE_SCHEMA_CHECKS", f"SqlScheduleStorage.{name} is gone"
        )
    for caller, check in (
        (compat.SqlScheduleStorage.update_instigator_state, "_has_instigators_table"),
        (compat.SqlScheduleStorage.all_instigator_state, "has_built_index"),
    ):
        assert check in inspect.getsource(caller), _fail(
            "cache_schedule_schema_checks", f"{caller.__name__} no longer asks {check}"
        )
    reads: list[str] = []
    real = compat.SqlScheduleStorage.has_secondary_index_table

    def counted(self: Any) -> bool:
        reads.append("secondary index table")
        return real(self)

    with dg.instance_for_test() as instance, pytest.MonkeyPatch.context() as patch:
        storage = instance.schedule_storage
        assert isinstance(storage, compat.SqlScheduleStorage)
        expected = (storage.has_instigators_table(), storage.has_secondary_index_table())
        patch.setattr(compat.SqlScheduleStorage, "has_secondary_index_table", counted)
        compat.cache_schedule_schema_checks(instance)
        compat.cache_schedule_schema_checks(instance)  # twice is once
        for _ in range(3):
            assert (storage.has_instigators_table(), storage.has_secondary_index_table()) == (
                expected
            )
            storage.has_built_index("any")  # asks has_secondary_index_table first
        assert reads == ["secondary index table"]  # read once, then answered
        # States are still written and read through the cached checks.
        origin = RemoteInstigatorOrigin(_repo_origin(), "cached")
        state = InstigatorState(
            origin, InstigatorType.SENSOR, InstigatorStatus.RUNNING, SensorInstigatorData()
        )
        instance.add_instigator_state(state)
        instance.update_instigator_state(state.with_status(InstigatorStatus.STOPPED))
        [stored] = [s for s in instance.all_instigator_state() if s.instigator_name == "cached"]
        assert stored.status == InstigatorStatus.STOPPED


def test_the_loop_parts_the_waking_daemons_rebuild_are_there() -> None:
    parameters = inspect.signature(compat.execute_sensor_iteration).parameters
    for name in (
        "threadpool_executor",
        "submit_threadpool_executor",
        "sensor_tick_futures",
        "instrument_elapsed",
    ):
        assert name in parameters
    assert {m.name for m in compat.SpanMarker} == {"START_SPAN", "END_SPAN"}
    assert {"exc_info", "logger", "log_message"} <= set(
        inspect.signature(compat.DaemonErrorCapture.process_exception).parameters
    )
    sensors = compat.SensorDaemon(settings={"use_threads": True, "num_workers": 1})
    try:
        assert sensors._threadpool_executor is not None
        assert sensors._submit_threadpool_executor is None
        assert callable(sensors.instrument_elapsed)
    finally:
        sensors.__exit__(None, None, None)
    dequeue = compat.QueuedRunCoordinatorDaemon(interval_seconds=1)
    assert (dequeue.interval_seconds, dequeue.interval_jitter_seconds) == (1, 0)
    assert inspect.isgeneratorfunction(compat.QueuedRunCoordinatorDaemon.run_iteration)


def test_the_run_columns_check_is_asked_on_every_run_read_and_cached_once() -> None:
    assert "has_run_stats_index_cols" in compat.SqlRunStorage.get_run_records.__code__.co_names
    with dg.instance_for_test() as instance:
        storage = instance.run_storage
        assert isinstance(storage, compat.SqlRunStorage)
        expected = storage.has_run_stats_index_cols()
        compat.cache_run_columns_check(instance)
        assert instance.get_run_by_id("no-such-run") is None  # reads go through the cache
        assert storage.has_run_stats_index_cols() is expected
        assert storage.has_run_stats_index_cols.cache_info().hits >= 1
        compat.cache_run_columns_check(instance)  # idempotent: the cache is kept
        assert storage.has_run_stats_index_cols.cache_info().hits >= 1


def test_a_run_columns_check_answered_by_another_instance_is_not_asked_again() -> None:
    with dg.instance_for_test() as instance:
        storage = instance.run_storage
        assert isinstance(storage, compat.SqlRunStorage)
        answer = compat.run_columns_check(instance)
        assert answer is type(storage).has_run_stats_index_cols(storage)
        with dg.instance_for_test() as other:
            compat.answer_run_columns_check(other, not answer)  # a wrong answer shows it is used
            assert other.run_storage.has_run_stats_index_cols() is (not answer)
            assert other.get_run_by_id("no-such-run") is None


def _engine_event(run_id: str) -> dg.EventLogEntry:
    return dg.EventLogEntry(
        error_info=None,
        level=10,
        user_message="contract",
        run_id=run_id,
        timestamp=1_700_000_000.0,
        dagster_event=dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.ENGINE_EVENT.value,
            job_name="contract_job",
            step_key="step",
            event_specific_data=compat.EngineEventData(),
        ),
    )


def test_the_postgres_storages_query_only_through_the_engine_they_are_given(
    postgres_url: str,
) -> None:
    dist = "dagster-postgres"
    storages = (
        PostgresRunStorage(postgres_url),
        PostgresEventLogStorage(postgres_url),
        PostgresScheduleStorage(postgres_url),
    )
    theirs = [storage._engine for storage in storages]
    for engine in theirs:
        assert isinstance(engine.pool, sqlalchemy.pool.NullPool), _fail(
            "share_storage_engine", "a storage's own engine is no longer a NullPool", dist
        )
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection.autocommit, _fail(
                "share_storage_engine", "a storage's own engine is no longer AUTOCOMMIT", dist
            )
    used_theirs: list[object] = []
    for engine in theirs:
        sqlalchemy.event.listen(engine, "connect", lambda *_: used_theirs.append(1))
    shared = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT", pool_size=1)
    statements: list[str] = []
    sqlalchemy.event.listen(
        shared, "before_cursor_execute", lambda _c, _cur, sql, *_: statements.append(sql)
    )
    compat.share_storage_engine(storages, shared)
    runs, events, schedules = storages
    try:
        run = dg.DagsterRun(job_name="contract_job", run_id="contract-run")
        runs.add_run(run)
        assert runs.get_runs(dg.RunsFilter(run_ids=[run.run_id]))
        events.store_event(_engine_event(run.run_id))
        assert len(events.get_logs_for_run(run.run_id)) == 1
        assert events.has_table("event_logs")
        with events.index_transaction() as conn:  # READ COMMITTED on this connection only
            conn.execute(sqlalchemy.text("SELECT 1"))
        assert schedules.all_instigator_state() == []
        assert used_theirs == [], _fail(
            "share_storage_engine", "a storage still connects through its own engine", dist
        )
        assert any("runs" in s for s in statements) and any("event_logs" in s for s in statements)
        assert any("instigators" in s or "jobs" in s for s in statements)
        with shared.connect() as conn:  # back to autocommit after the transaction
            assert conn.connection.dbapi_connection.autocommit, _fail(
                "share_storage_engine", "an isolation level set by a storage outlives its use",
                dist,
            )
    finally:
        shared.dispose()


def test_insert_and_notify_writes_what_dagster_postgres_store_event_writes(
    postgres_url: str,
) -> None:
    dist = "dagster-postgres"
    code = PostgresEventLogStorage.store_event.__code__
    for name in ("prepare_insert_event", "CHANNEL_NAME", "ASSET_EVENTS", "ASSET_CHECK_EVENTS"):
        assert name in code.co_names, _fail(
            "insert_and_notify", f"store_event no longer uses {name}", dist
        )
    assert compat.INDEXED_EVENT_TYPES >= {dg.DagsterEventType.ASSET_MATERIALIZATION}
    events = PostgresEventLogStorage(postgres_url)
    plain_url = postgres_url.replace("+psycopg2", "")
    listener = psycopg2.connect(plain_url)
    listener.autocommit = True
    try:
        with listener.cursor() as cur:
            cur.execute(f"LISTEN {compat.POSTGRES_EVENT_CHANNEL}")
        entry = _engine_event("contract-run")
        events.store_event(entry)  # theirs
        with events.index_connection() as conn:  # ours
            conn.execute(compat.insert_and_notify(events.prepare_insert_event(entry)))
        with events.index_connection() as conn:
            rows = [dict(r._mapping) for r in conn.execute(
                sqlalchemy.text("SELECT * FROM event_logs ORDER BY id")
            )]
        assert len(rows) == 2
        ids = [row.pop("id") for row in rows]
        assert rows[0] == rows[1], _fail("insert_and_notify", "its row differs from store_event's")
        payloads: list[str] = []

        def notified() -> bool:
            listener.poll()
            payloads.extend(n.payload for n in listener.notifies)
            listener.notifies.clear()
            return len(payloads) >= 2

        wait_for(notified, 10, "both notifications")
        assert payloads == [f"contract-run_{i}" for i in ids], _fail(
            "insert_and_notify", "its notification differs from store_event's"
        )
    finally:
        listener.close()
    # Asynchronous: only the statement's own transaction commits without waiting.
    transactional = sqlalchemy.create_engine(postgres_url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with transactional.begin() as conn:
            conn.execute(
                compat.insert_and_notify(events.prepare_insert_event(entry), asynchronous=True)
            )
            assert conn.execute(sqlalchemy.text("SHOW synchronous_commit")).scalar() == "off"
        with transactional.begin() as conn:
            assert conn.execute(sqlalchemy.text("SHOW synchronous_commit")).scalar() == "on"
    finally:
        transactional.dispose()
    assert len(events.get_logs_for_run("contract-run")) == 3


TESTED_BY = {
    test_prefer_daemons_builds_the_waking_sensor_and_dequeue_daemons: [
        "prefer_daemons",
        "DagsterDaemon",
        "SensorDaemon",
    ],
    test_the_sensor_loop_checks_the_minimum_interval_through_the_module_function: [
        "evaluate_when_due",
    ],
    test_sensor_evaluations_share_one_instance_per_ref: ["share_sensor_instances"],
    test_schedule_storage_schema_checks_are_answered_once: [
        "cache_schedule_schema_checks",
        "SCHEDULE_SCHEMA_CHECKS",
        "SqlScheduleStorage",
    ],
    test_the_daemon_refresh_keeps_a_live_code_server_and_replaces_a_dead_one: [
        "keep_live_code_servers",
    ],
    test_the_loop_parts_the_waking_daemons_rebuild_are_there: [
        "execute_sensor_iteration",
        "SpanMarker",
        "DaemonErrorCapture",
        "QueuedRunCoordinatorDaemon",
    ],
    test_the_run_columns_check_is_asked_on_every_run_read_and_cached_once: [
        "SqlRunStorage",
        "cache_run_columns_check",
    ],
    test_the_postgres_storages_query_only_through_the_engine_they_are_given: [
        "share_storage_engine",
    ],
    test_insert_and_notify_writes_what_dagster_postgres_store_event_writes: [
        "insert_and_notify", "INDEXED_EVENT_TYPES", "POSTGRES_EVENT_CHANNEL",
    ],
    test_a_run_columns_check_answered_by_another_instance_is_not_asked_again: [
        "run_columns_check", "answer_run_columns_check",
    ],
}
"""The daemon hooks' names, each with the test above that holds its contract."""


def test_every_exported_name_has_a_contract() -> None:
    check_all_covered(compat, {**CONTRACTS, **TESTED_BY})


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.__name__)
def test_contract(contract: Callable[..., None], tmp_path: Path) -> None:
    run_contract(contract, tmp_path=tmp_path)
