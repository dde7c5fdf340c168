"""Spec loading: valid specs load, and each kind of bad spec names its file, line and field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from alphaswarm_orch.settings import WORKFLOWS_DIR, Settings, SettingsError
from alphaswarm_orch.workflows.spec import (
    DEFAULT_WORKFLOWS_DIR,
    SpecProblem,
    WorkflowSpecError,
    load_spec,
    load_specs,
    workflows_dir,
)

VALID = """\
name: nightly
schedule: "0 2 * * *"
steps:
  - name: announce
    op: log
    params: {message: hello}
  - name: backtest
    depends_on: [announce]
    dispatch:
      task: backtest.run
      queue: backtest
      kwargs: {strategy: momentum}
      timeout_seconds: 60
  - name: check
    op: http_check
    params: {url: "http://127.0.0.1:1/health"}
  - name: done
    op: noop
    depends_on: [backtest, check]
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(tmp_path: Path, text: str) -> list[SpecProblem]:
    path = write(tmp_path, "spec.yaml", text)
    with pytest.raises(WorkflowSpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value)
    return info.value.problems


def only_problem(tmp_path: Path, text: str) -> SpecProblem:
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1, problems
    return problems[0]


def test_valid_spec_loads(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, "nightly.yaml", VALID))
    assert spec.name == "nightly"
    assert spec.schedule == "0 2 * * *"
    assert spec.source == tmp_path / "nightly.yaml"
    steps = {step.name: step for step in spec.steps}
    assert steps["backtest"].dispatch.queue == "backtest"
    assert steps["backtest"].dispatch.kwargs == {"strategy": "momentum"}
    assert steps["done"].depends_on == ["backtest", "check"]
    assert (steps["check"].op, steps["check"].queue) == ("http_check", "workflows")


def test_the_shipped_examples_load_by_default() -> None:
    assert workflows_dir(Settings.from_env({})) == DEFAULT_WORKFLOWS_DIR
    assert [spec.name for spec in load_specs(DEFAULT_WORKFLOWS_DIR)] == ["example_backtest"]


def test_workflows_dir_must_be_a_directory(tmp_path: Path) -> None:
    assert workflows_dir(Settings.from_env({WORKFLOWS_DIR: str(tmp_path)})) == tmp_path
    with pytest.raises(SettingsError, match=f"{WORKFLOWS_DIR}=.*missing.*is not a directory"):
        workflows_dir(Settings.from_env({WORKFLOWS_DIR: str(tmp_path / "missing")}))


def test_cycle_names_the_steps_and_the_depends_on_line(tmp_path: Path) -> None:
    problem = only_problem(
        tmp_path,
        """\
        name: loop
        steps:
          - name: a
            op: noop
            depends_on: [c]
          - name: b
            op: noop
            depends_on: [a]
          - name: c
            op: noop
            depends_on: [b]
        """,
    )
    assert problem.field == "steps[0].depends_on"
    assert problem.line == 5
    assert "dependency cycle: a -> c -> b -> a" in problem.message


def test_self_dependency_is_a_cycle(tmp_path: Path) -> None:
    problem = only_problem(
        tmp_path,
        """\
        name: selfish
        steps:
          - name: a
            op: noop
            depends_on: [a]
        """,
    )
    assert (problem.field, problem.line) == ("steps[0].depends_on", 5)
    assert "a -> a" in problem.message


def test_unknown_step_in_depends_on(tmp_path: Path) -> None:
    problem = only_problem(
        tmp_path,
        """\
        name: typo
        steps:
          - name: fetch
            op: noop
          - name: report
            op: noop
            depends_on:
              - fetch
              - fecth
        """,
    )
    assert (problem.field, problem.line) == ("steps[1].depends_on[1]", 9)
    assert "unknown step 'fecth'" in problem.message
    assert "steps are fetch, report" in problem.message


@pytest.mark.parametrize(
    ("queue", "expected"),
    [("nope", "unknown queue 'nope'"), ("backtest", "heavy executor queue")],
)
def test_light_step_queue_must_be_a_light_queue(tmp_path: Path, queue: str, expected: str) -> None:
    problem = only_problem(
        tmp_path,
        f"""\
        name: routed
        steps:
          - name: a
            op: noop
            queue: {queue}
        """,
    )
    assert (problem.field, problem.line) == ("steps[0].queue", 5)
    assert expected in problem.message


@pytest.mark.parametrize(
    ("queue", "expected"),
    [
        ("workflows", "'workflows' (step 'run') is a light queue"),
        ("gpu", "unknown queue 'gpu'"),
    ],
)
def test_dispatch_target_must_be_an_executor_queue(
    tmp_path: Path, queue: str, expected: str
) -> None:
    problem = only_problem(
        tmp_path,
        f"""\
        name: misrouted
        steps:
          - name: run
            dispatch:
              task: backtest.run
              queue: {queue}
        """,
    )
    assert (problem.field, problem.line) == ("steps[0].dispatch.queue", 6)
    assert expected in problem.message
    assert "backtest" in problem.message  # lists the legal targets


@pytest.mark.parametrize("cron", ["0 2 * *", "61 * * * *", "every day", "0 0 31 2 *"])
def test_invalid_cron_schedule(tmp_path: Path, cron: str) -> None:
    problem = only_problem(
        tmp_path,
        f"""\
        name: timed
        schedule: "{cron}"
        steps:
          - name: a
            op: noop
        """,
    )
    assert (problem.field, problem.line) == ("schedule", 2)
    assert f"invalid cron schedule {cron!r}" in problem.message


def test_schedule_and_trigger_are_exclusive(tmp_path: Path) -> None:
    problem = only_problem(
        tmp_path,
        """\
        name: both
        schedule: "0 * * * *"
        trigger: manual
        steps:
          - name: a
            op: noop
        """,
    )
    assert (problem.field, problem.line) == ("trigger", 3)


@pytest.mark.parametrize("trigger", ["on_push", "{after: Bad-Name}", "{after: a, when: b}"])
def test_trigger_is_manual_or_after_a_workflow(tmp_path: Path, trigger: str) -> None:
    problem = only_problem(
        tmp_path,
        f"""\
        name: triggered
        trigger: {trigger}
        steps:
          - name: a
            op: noop
        """,
    )
    assert (problem.field, problem.line) == ("trigger", 2)
    assert "neither `manual` nor `{after: <workflow name>}`" in problem.message


def test_after_trigger_names_a_known_workflow_without_cycles(tmp_path: Path) -> None:
    step = "steps: [{name: a, op: noop}]\n"
    write(tmp_path, "a.yaml", "name: first\ntrigger: {after: second}\n" + step)
    second = write(tmp_path, "b.yaml", "name: second\ntrigger:\n  after: first\n" + step)
    unknown = write(tmp_path, "c.yaml", "name: third\ntrigger: {after: fourth}\n" + step)
    write(tmp_path, "d.yaml", "name: fifth\ntrigger: {after: third}\n" + step)
    with pytest.raises(WorkflowSpecError) as info:
        load_specs(tmp_path)
    by_path = {p.path.name: p for p in info.value.problems}
    assert set(by_path) == {"a.yaml", "b.yaml", "c.yaml"}  # fifth -> third is fine
    assert (by_path["b.yaml"].path, by_path["b.yaml"].line) == (second, 3)
    assert by_path["b.yaml"].field == "trigger.after"
    assert "trigger cycle: second -> first -> second" in by_path["b.yaml"].message
    assert (by_path["c.yaml"].path, by_path["c.yaml"].line) == (unknown, 2)
    assert "unknown workflow 'fourth'" in by_path["c.yaml"].message


def test_duplicate_step_names(tmp_path: Path) -> None:
    problem = only_problem(
        tmp_path,
        """\
        name: twins
        steps:
          - name: a
            op: noop
          - name: a
            op: noop
        """,
    )
    assert (problem.field, problem.line) == ("steps[1].name", 5)
    assert "duplicate step name 'a'" in problem.message


def test_duplicate_workflow_names_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", "name: same\nsteps: [{name: a, op: noop}]\n")
    second = write(tmp_path, "b.yml", "# the copy\nname: same\nsteps: [{name: a, op: noop}]\n")
    with pytest.raises(WorkflowSpecError) as info:
        load_specs(tmp_path)
    [problem] = info.value.problems
    assert (problem.path, problem.line, problem.field) == (second, 2, "name")
    assert f"duplicate workflow name 'same': already defined in {first}" in problem.message


def test_duplicate_yaml_keys_are_refused(tmp_path: Path) -> None:
    problem = only_problem(
        tmp_path,
        """\
        name: keys
        steps:
          - name: a
            op: log
            op: noop
        """,
    )
    assert (problem.field, problem.line) == ("steps[0].op", 5)
    assert "duplicate key 'op' (first at line 4)" in problem.message


def test_schema_errors_name_the_field_and_line(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """\
        name: Bad-Name
        steps:
          - name: a
            op: noop
            retries: 3
          - name: b
            dispatch:
              queue: backtest
        """,
    )
    found = {(p.field, p.line) for p in problems}
    assert found == {
        ("name", 1),
        ("steps[0].retries", 5),
        ("steps[1].dispatch.task", 7),
    }, problems


def test_light_step_name_and_params_are_checked(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """\
        name: lights
        steps:
          - name: a
            op: sleep
          - name: b
            op: log
            params: {mesage: hi}
          - name: c
            op: http_check
            params:
              url: "ftp://example"
        """,
    )
    by_field = {p.field: p for p in problems}
    assert "unknown light step 'sleep'" in by_field["steps[0].op"].message
    assert by_field["steps[0].op"].line == 4
    assert by_field["steps[1].params.message"].line == 7  # missing: the params mapping's line
    assert by_field["steps[1].params.mesage"].line == 7
    assert by_field["steps[2].params.url"].line == 11


def test_a_step_is_either_light_or_dispatch(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """\
        name: shapes
        steps:
          - name: neither
          - name: both
            op: noop
            dispatch: {task: backtest.run, queue: backtest}
          - name: routed_dispatch
            queue: workflows
            dispatch: {task: backtest.run, queue: backtest}
        """,
    )
    by_field = {p.field: p for p in problems}
    assert "exactly one of `op`" in by_field["steps[0]"].message
    assert by_field["steps[0]"].line == 3
    assert by_field["steps[1]"].line == 4
    assert "takes no `queue`" in by_field["steps[2].queue"].message
    assert by_field["steps[2].queue"].line == 8


def test_dispatch_arguments_must_be_json(tmp_path: Path) -> None:
    problem = only_problem(
        tmp_path,
        """\
        name: dated
        steps:
          - name: a
            dispatch:
              task: backtest.run
              queue: backtest
              kwargs: {start: 2024-01-01}
        """,
    )
    assert (problem.field, problem.line) == ("steps[0].dispatch.kwargs", 7)
    assert "JSON" in problem.message


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, "name: broken\nsteps:\n  - name: [a\n")
    assert problem.line == 4
    assert "not valid YAML" in problem.message


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(WorkflowSpecError, match=r"latin1\.yaml: \(document\): cannot read"):
        load_spec(path)


def test_all_bad_files_are_reported_together(tmp_path: Path) -> None:
    bad_cron = write(tmp_path, "a.yaml", "name: a\nschedule: nope\nsteps: [{name: s, op: noop}]\n")
    bad_dep = write(tmp_path, "b.yaml", "name: b\nsteps: [{name: s, op: noop, depends_on: [x]}]\n")
    write(tmp_path, "notes.txt", "not a spec")
    with pytest.raises(WorkflowSpecError) as info:
        load_specs(tmp_path)
    assert [p.path for p in info.value.problems] == [bad_cron, bad_dep]
    message = str(info.value)
    assert f"{bad_cron}:2: schedule:" in message
    assert f"{bad_dep}:2: steps[0].depends_on[0]:" in message


def test_the_readme_example_is_a_valid_spec(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Workflows", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    spec = load_spec(write(tmp_path, "readme.yaml", example))
    assert [step.dispatch.queue for step in spec.steps if step.dispatch] == ["backtest"]


def _bomb(levels: int) -> str:
    """Each level a list of nine aliases of the previous one: 9**levels leaves from a few lines."""
    lines = [
        "name: bomb",
        "steps:",
        "  - name: s",
        "    dispatch:",
        "      task: backtest.run",
        "      queue: backtest",
        "      kwargs:",
        "        l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]",
    ]
    for level in range(1, levels + 1):
        lines.append(f"        l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(60)
def test_an_alias_bomb_is_refused_naming_the_line(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, _bomb(5))
    # l1 adds 9 * 10 nodes, l2 9 * 91, l3 9 * 820 (8,289 in all), l4's first alias 7,381
    # more: refused at l4's line, before anything is expanded.
    assert problem.line == 12, problem
    assert "aliases expand to more than 10000 nodes" in problem.message


@pytest.mark.timeout(60)
def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    problem = only_problem(
        tmp_path,
        """\
        name: loop
        steps:
          - name: s
            dispatch:
              task: backtest.run
              queue: backtest
              kwargs: &k {again: *k}
        """,
    )
    assert problem.line == 7
    assert "alias *k is used inside the node it names" in problem.message


def test_aliases_within_the_bound_still_work(tmp_path: Path) -> None:
    spec = load_spec(
        write(
            tmp_path,
            "spec.yaml",
            """\
            name: shared
            steps:
              - name: first
                dispatch: &run {task: backtest.run, queue: backtest, kwargs: {days: 30}}
              - name: second
                depends_on: [first]
                dispatch: *run
            """,
        )
    )
    assert [step.dispatch.kwargs for step in spec.steps] == [{"days": 30}, {"days": 30}]


def test_nesting_is_bounded(tmp_path: Path) -> None:
    deep = "[" * 100 + "]" * 100
    problem = only_problem(
        tmp_path,
        f"""\
        name: deep
        steps:
          - name: s
            dispatch:
              task: backtest.run
              queue: backtest
              args: {deep}
        """,
    )
    assert problem.line == 7
    assert "nested deeper than 64 levels" in problem.message


def reversed_chain(count: int, *, cycle: bool = False) -> str:
    """s0 depends on s1, s1 on s2 ...: a depth-first search goes `count` steps deep."""
    lines = ["name: chain", "steps:"]
    for i in range(count):
        after = f"s{i + 1}" if i + 1 < count else ("s0" if cycle else None)
        lines += [f"  - name: s{i}", "    op: noop"]
        if after:
            lines.append(f"    depends_on: [{after}]")
    return "\n".join(lines) + "\n"


def test_a_long_dependency_chain_is_refused_without_recursion(tmp_path: Path) -> None:
    problem = only_problem(tmp_path, reversed_chain(5000))
    assert problem.field == "steps[0].depends_on" and problem.line == 5
    assert "a depends_on chain of 5000 steps starts at 's0': at most 500" in problem.message
    problem = only_problem(tmp_path, reversed_chain(5000, cycle=True))
    assert problem.field == "steps[0].depends_on" and problem.line == 5
    assert problem.message.startswith("dependency cycle: s0 -> s1 -> s2")
    assert problem.message.endswith("s4998 -> s4999 -> s0")
    assert len(load_spec(write(tmp_path, "chain.yaml", reversed_chain(500))).steps) == 500


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "0", "-5", "1e12"])
def test_dispatch_timeout_must_be_finite_and_bounded(tmp_path: Path, value: str) -> None:
    problem = only_problem(
        tmp_path,
        f"""\
        name: waits
        steps:
          - name: s
            dispatch:
              task: backtest.run
              queue: backtest
              timeout_seconds: {value}
        """,
    )
    assert (problem.field, problem.line) == ("steps[0].dispatch.timeout_seconds", 7)
    assert "is not a number of seconds above 0 and at most 604800" in problem.message
