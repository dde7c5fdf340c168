"""Declarative YAML files (workflow specs, connections.yaml): load, validate, locate problems.

One loader for every YAML file a user writes: it refuses alias bombs, recursive aliases and
absurd nesting before anything expands (one linear pass over the parser's events), keeps the
node tree so a pydantic error location (('steps', 2, 'dispatch', 'queue')) maps to a line,
refuses duplicate keys (YAML silently keeps the last), and reports every problem as
`<file>:<line>: <field>: <problem>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

MAX_ALIAS_NODES = 10_000
"""How many nodes YAML aliases may add in all once expanded: a file that repeats a block with
`*anchor` stays well under it, an alias bomb (each level nine aliases of the last) does not."""
MAX_NESTING = 64
"""Deepest nesting of mappings and lists a file may have (the YAML composer recurses)."""
MAX_VALUE_REPR = 80
"""How much of an offending value a message quotes."""
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML was built with it (same events and marks, ~10x faster)."""

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class SpecProblem:
    path: Path
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.field or '(document)'}: {self.message}"


class YamlSpecError(ValueError):
    """One or more problems in declarative YAML; each names its file, line and field."""

    what = "YAML file"
    advice = "Fix the file."

    def __init__(self, problems: Sequence[SpecProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {problem}" for problem in self.problems)
        super().__init__(
            f"invalid {self.what} ({len(self.problems)} problem(s)):\n{lines}\n{self.advice}"
        )


class YamlDocument:
    """A parsed file: its data and the node tree that locates a field's line."""

    def __init__(self, path: Path, root: yaml.Node | None, data: Any) -> None:
        self.path = path
        self.root = root
        self.data = data

    def problem(self, loc: Sequence[str | int], message: str) -> SpecProblem:
        return SpecProblem(self.path, self.line(loc), field_name(loc), message)

    def validation_problems(self, exc: ValidationError, prefix: Loc = ()) -> list[SpecProblem]:
        """One problem per pydantic error, at the line of its location under `prefix`."""
        return [self.problem((*prefix, *err["loc"]), error_message(err)) for err in exc.errors()]

    def line(self, loc: Sequence[str | int]) -> int | None:
        """The line of the deepest key or item of `loc` present (a missing field: its parent)."""
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                pair = next(((k, v) for k, v in node.value if k.value == part), None)
                if pair is None:
                    break
                line, node = pair[0].start_mark.line, pair[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    break
                node = node.value[part]
                line = node.start_mark.line
            else:
                break
        return line + 1

    def duplicate_keys(self) -> list[SpecProblem]:
        """YAML keeps the last of two equal keys silently; a file must not rely on that."""
        problems: list[SpecProblem] = []
        stack: list[tuple[yaml.Node, Loc]] = [(self.root, ())] if self.root is not None else []
        while stack:
            node, loc = stack.pop()
            if isinstance(node, yaml.MappingNode):
                seen: dict[str, int] = {}
                for key, value in node.value:
                    line = key.start_mark.line + 1
                    if key.value in seen:
                        problems.append(
                            SpecProblem(
                                self.path,
                                line,
                                field_name((*loc, str(key.value))),
                                f"duplicate key {key.value!r} (first at line {seen[key.value]})",
                            )
                        )
                    else:
                        seen[key.value] = line
                    stack.append((value, (*loc, str(key.value))))
            elif isinstance(node, yaml.SequenceNode):
                stack.extend((item, (*loc, i)) for i, item in enumerate(node.value))
        return problems


def load_document(path: Path, error: type[YamlSpecError] = YamlSpecError) -> YamlDocument:
    """Read and parse `path` safely; raise `error` naming the line when it is not usable YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error([SpecProblem(path, None, "", f"cannot read: {exc}")]) from exc
    loader = _YAML_LOADER(text)
    try:
        _check_expansion(path, text, error)
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise error([SpecProblem(path, line, "", f"not valid YAML: {exc}")]) from exc
    finally:
        loader.dispose()
    return YamlDocument(path, node, data)


def _check_expansion(path: Path, text: str, error: type[YamlSpecError]) -> None:
    """Refuse, before anything expands aliases, a document whose aliases would expand past
    MAX_ALIAS_NODES, that aliases a node from inside itself, or that nests past MAX_NESTING.

    One pass over the parser's events, linear in the text: each anchor's expanded size is
    known when its node ends, and each alias adds that size.
    """
    sizes: dict[str, int] = {}
    open_nodes: list[list[Any]] = []  # [anchor, expanded size so far] per open collection
    added = 0

    def refuse(event: yaml.Event, message: str) -> YamlSpecError:
        return error([SpecProblem(path, event.start_mark.line + 1, "", message)])

    for event in yaml.parse(text, Loader=_YAML_LOADER):
        size = 0
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in sizes:
                inside = any(anchor == event.anchor for anchor, _ in open_nodes)
                raise refuse(
                    event,
                    f"alias *{event.anchor} "
                    + (
                        "is used inside the node it names (a recursive structure)"
                        if inside
                        else "names no anchor defined before it"
                    ),
                )
            size = sizes[event.anchor]
            added += size
            if added > MAX_ALIAS_NODES:
                raise refuse(
                    event,
                    f"aliases expand to more than {MAX_ALIAS_NODES} nodes (*{event.anchor} "
                    f"alone adds {size}): write the repeated parts out or simplify the file",
                )
        elif isinstance(event, yaml.CollectionStartEvent):
            if len(open_nodes) >= MAX_NESTING:
                raise refuse(event, f"nested deeper than {MAX_NESTING} levels")
            open_nodes.append([event.anchor, 1])
            continue
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = open_nodes.pop()
            if anchor is not None:
                sizes[anchor] = size
        elif isinstance(event, yaml.ScalarEvent):
            size = 1
            if event.anchor is not None:
                sizes[event.anchor] = size
        if open_nodes:
            open_nodes[-1][1] += size


def error_message(err: ErrorDetails) -> str:
    """A pydantic error as one sentence: a validator's own text as it is (it names the value);
    pydantic's wording with the offending value appended."""
    if err["type"] == "value_error":
        return str(err.get("ctx", {}).get("error", err["msg"]))
    if err["type"] == "extra_forbidden":
        return f"unknown field {err['loc'][-1]!r} (not allowed here)"
    if err["type"] == "missing":
        return err["msg"]
    return f"{err['msg']}, got {quoted(err['input'])}"


def quoted(value: Any) -> str:
    """`repr(value)`, cut to MAX_VALUE_REPR characters."""
    text = repr(value)
    return text if len(text) <= MAX_VALUE_REPR else text[: MAX_VALUE_REPR - 3] + "..."


def field_name(loc: Sequence[str | int]) -> str:
    """('steps', 2, 'dispatch', 'queue') -> 'steps[2].dispatch.queue'."""
    text = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a mapping's key: the key itself is named
            continue
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
