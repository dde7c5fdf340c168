"""Definitions built once in the forkserver, reused by run workers while their inputs hold.

A run worker used to build the code location's Definitions, and Dagster their repository and
jobs, for every run: 0.3-0.5 s before RUN_START on a loaded 2-core node, and 20-30 MiB of the
run worker's own memory for as long as the run lasts (a session: hours). Building reads the
environment (Settings) and files (the workflow specs, the ingestion connections file), so a
copy built when the daemon started may no longer be what the run would build.

So the forkserver builds each `reusable` builder once (`prebuild`, the last thing it does
before it forks run workers), recording what the build read: each environment variable it
looked up (set or not; all of them if it iterated the environment), and every path it
opened for reading, listed or stat'ed (missing ones included) but did not write itself (what
it writes is its output, e.g. dlt's pipeline state files). A run worker reuses the
forkserver's copy only if each of them is as it was when it loads the code location (each
variable's value; each path's type, size, inode, mtime and ctime, a listed directory's names,
an opened file's content hash); otherwise it builds its own, as before, and tells the
`when_stale` listeners what changed.

Only what the build does through `os.environ` (`os.getenv` included), `open`/`io.open`/
`os.open`, `os.stat`, `os.listdir`, `os.scandir` and `os.mkdir`/`rename`/`replace`/`remove`/
`unlink`/`rmdir` (what Settings, pathlib, yaml and json loading, and dlt use) is seen.
Anything else it might depend on (the network, the clock) is not: a builder must not.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import io
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

VOLATILE_PREFIXES = ("/proc/", "/sys/", "/dev/")
"""Paths whose state says nothing about a build's inputs (and changes all the time)."""
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_WRITERS = ("mkdir", "rename", "replace", "remove", "unlink", "rmdir")

_stat, _listdir, _scandir = os.stat, os.listdir, os.scandir
_open, _io_open, _os_open = builtins.open, io.open, os.open
"""The originals: the recorder patches the module attributes for the length of a build."""
_Environ = type(os.environ)
_env_getitem, _env_iter = _Environ.__getitem__, _Environ.__iter__

Fingerprint = tuple[Any, ...]
EVERY_VARIABLE = "*"
"""Recorded when the build iterated the environment: then all of it is an input."""


@dataclass(frozen=True)
class Inputs:
    """What one build read: environment variables (None: unset), and each path's fingerprint
    at the build's end."""

    environment: Mapping[str, str | None]
    paths: Mapping[str, Fingerprint]
    opened: frozenset[str] = frozenset()
    listed: frozenset[str] = frozenset()

    def changes(self) -> list[str]:
        """What differs now: environment variable names (never values) and paths."""
        names = set(self.environment) - {EVERY_VARIABLE}
        if EVERY_VARIABLE in self.environment:
            names |= set(os.environ)
        changed = [
            f"environment variable {name}"
            for name in sorted(names)
            if os.environ.get(name) != self.environment.get(name)
        ]
        for path, before in self.paths.items():
            if fingerprint(path, path in self.opened, path in self.listed) != before:
                changed.append(path)
        return changed


def fingerprint(path: str, opened: bool, listed: bool) -> Fingerprint:
    """The state of `path` a build could depend on: missing; a directory, with its sorted
    names if it was listed; else its type, size, inode, modification and change times, and
    for a regular file that was opened the SHA-256 of its content (a rewrite within the file
    system's timestamp granularity, or one that restores the mtime, still shows)."""
    try:
        st = _stat(path)
    except FileNotFoundError:
        return ("missing",)
    except OSError as exc:
        return ("error", exc.errno)
    if stat.S_ISDIR(st.st_mode):
        # What a build sees of a directory: that it is one, and its names if it listed them
        # (not its times, which any file created in it moves).
        try:
            return ("dir", tuple(sorted(_listdir(path))) if listed else None)
        except OSError as exc:
            return ("dir", "error", exc.errno)
    found: Fingerprint = (
        stat.S_IFMT(st.st_mode),
        st.st_size,
        st.st_ino,
        st.st_dev,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )
    if opened and stat.S_ISREG(st.st_mode):
        try:
            with _io_open(path, "rb") as fh:
                found += (hashlib.file_digest(fh, "sha256").hexdigest(),)
        except OSError as exc:
            found += ("error", exc.errno)
    return found


class _Recorder:
    """Records what one thread (the building one) reads and writes; others pass through.

    A path the build writes (opened for writing, created, renamed or removed) is its output,
    not an input: dlt writes a declared pipeline's state file when the code location is first
    loaded, by this build or by any other process loading it.
    """

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.variables: dict[str, str | None] = {}
        self.first: dict[str, Fingerprint] = {}
        self.opened: set[str] = set()
        self.listed: set[str] = set()
        self.written: set[str] = set()

    def mine(self) -> bool:
        return threading.get_ident() == self.thread

    def looked_up(self, name: str, value: str | None) -> None:
        if self.mine() and isinstance(name, str):
            self.variables.setdefault(name, value)

    def iterated(self) -> None:
        if self.mine():
            self.variables[EVERY_VARIABLE] = None

    def _name(self, path: Any) -> str | None:
        if not self.mine() or isinstance(path, int):
            return None
        try:
            name = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return None
        return None if name.startswith(VOLATILE_PREFIXES) else name

    def saw(self, path: Any, opened: bool = False, listed: bool = False) -> None:
        name = self._name(path)
        if name is None:
            return
        if opened:
            self.opened.add(name)
        if listed:
            self.listed.add(name)
        if name not in self.first or opened or listed:
            # first sight; or seen again in a way that adds to what it is fingerprinted by
            self.first[name] = fingerprint(name, name in self.opened, name in self.listed)

    def wrote(self, *paths: Any) -> None:
        for path in paths:
            name = self._name(path)
            if name is not None:
                self.written.add(name)

    def read(self) -> list[str]:
        """The paths the build read and did not write."""
        return [path for path in self.first if path not in self.written]

    def inputs(self) -> Inputs:
        opened, listed = frozenset(self.opened), frozenset(self.listed)
        return Inputs(
            dict(self.variables),
            {path: fingerprint(path, path in opened, path in listed) for path in self.read()},
            opened,
            listed,
        )


@contextmanager
def _recording() -> Iterator[_Recorder]:
    recorder = _Recorder()

    def env_getitem(self: Any, key: Any) -> Any:
        try:
            value = _env_getitem(self, key)
        except KeyError:
            if self is os.environ:
                recorder.looked_up(key, None)
            raise
        if self is os.environ:
            recorder.looked_up(key, value)
        return value

    def env_iter(self: Any) -> Iterator[Any]:
        if self is os.environ:
            recorder.iterated()
        return _env_iter(self)

    def opener(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if any(flag in mode for flag in "wax+"):
                recorder.wrote(file)
            else:
                recorder.saw(file, opened=True)
            return original(file, mode, *args, **kwargs)

        return open_

    def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if kwargs.get("dir_fd") is None:
            if flags & _WRITE_FLAGS:
                recorder.wrote(path)
            else:
                recorder.saw(path, opened=True)
        return _os_open(path, flags, *args, **kwargs)

    def os_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if kwargs.get("dir_fd") is None:
            recorder.saw(path)
        return _stat(path, *args, **kwargs)

    def os_listdir(path: Any = ".") -> list[Any]:
        recorder.saw(path, listed=True)
        return _listdir(path)

    def os_scandir(path: Any = ".") -> Any:
        recorder.saw(path, listed=True)
        return _scandir(path)

    def writer(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def write(*args: Any, **kwargs: Any) -> Any:
            recorder.wrote(*args[:2])  # mkdir/remove/unlink/rmdir: path; rename/replace: both
            return original(*args, **kwargs)

        return write

    patches: list[tuple[Any, str, Any]] = [
        (_Environ, "__getitem__", env_getitem),
        (_Environ, "__iter__", env_iter),
        (builtins, "open", opener(_open)),
        (io, "open", opener(_io_open)),
        (os, "open", os_open),
        (os, "stat", os_stat),
        (os, "listdir", os_listdir),
        (os, "scandir", os_scandir),
    ]
    patches += [(os, name, writer(getattr(os, name))) for name in _WRITERS]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, patched in patches:
            setattr(owner, name, patched)
        yield recorder
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


class Reusable(Generic[T]):
    """A no-argument builder whose result the forkserver builds once (see module docstring).

    Calling it returns the forkserver's result while its inputs hold, else builds anew.
    """

    def __init__(self, build: Callable[[], T], warm: Callable[[T], object] | None) -> None:
        self.build = build
        self.warm = warm
        self.prebuilt: tuple[T, Inputs] | None = None
        functools.update_wrapper(self, build)

    @property
    def name(self) -> str:
        return f"{self.build.__module__}.{self.build.__qualname__}"

    def __call__(self) -> T:
        reused = self.reuse()
        return reused if reused is not None else self.build()

    def reuse(self) -> T | None:
        """The forkserver's result if its inputs are unchanged; else None (from then on, in
        this process), and the `when_stale` listeners are told what changed."""
        if self.prebuilt is None:
            return None
        value, inputs = self.prebuilt
        changed = inputs.changes()
        if not changed:
            return value
        self.prebuilt = None
        for listener in _STALE_LISTENERS:
            listener(self.name, changed)
        return None

    def prebuild(self, attempts: int = 3) -> None:
        """Build, recording the inputs. Inputs that change during the build (another process
        loading the code location at once creates dlt's state files) make it build again,
        up to `attempts` times; after that, or if the build fails, run workers build their
        own (and a failing build reports its error in the run)."""
        changed: list[str] = []
        for _ in range(attempts):
            with _recording() as recorder:
                try:
                    value = self.build()
                    if self.warm is not None:
                        self.warm(value)
                except Exception as exc:
                    _say(f"could not prebuild {self.name} ({type(exc).__name__}: {exc})")
                    return
            inputs = recorder.inputs()
            changed = inputs.changes()  # the environment now, the paths as at the build's end
            changed += [p for p in recorder.read() if inputs.paths[p] != recorder.first[p]]
            if not changed:
                self.prebuilt = (value, inputs)
                return
        _say(f"{self.name}'s inputs kept changing while it was built ({', '.join(changed)})")


def _say(problem: str) -> None:
    print(f"forkserver: {problem}; each run worker builds its own", file=sys.stderr)


_BUILDERS: list[Reusable[Any]] = []
_STALE_LISTENERS: list[Callable[[str, list[str]], object]] = []


def reusable(
    warm: Callable[[T], object] | None = None,
) -> Callable[[Callable[[], T]], Reusable[T]]:
    """Decorate a no-argument builder (see `Reusable`). `warm(result)` runs once after the
    forkserver's build (e.g. resolve every job)."""

    def decorate(build: Callable[[], T]) -> Reusable[T]:
        builder = Reusable(build, warm)
        _BUILDERS.append(builder)
        return builder

    return decorate


def prebuild() -> None:
    """Build every reusable builder imported so far, recording its inputs (the forkserver)."""
    for builder in _BUILDERS:
        builder.prebuild()


def when_stale(listener: Callable[[str, list[str]], object]) -> None:
    """Call `listener(builder name, what changed)` when this process finds a prebuilt result
    out of date and builds its own (a run worker reports it in the run's log)."""
    _STALE_LISTENERS.append(listener)
