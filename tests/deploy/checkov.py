"""checkov in a venv of its own: it pins packaging (and more) below what this project uses,
so installing it beside alphaswarm_orch would change our dependencies. Created once per
machine under the user cache dir and reused; pass ALPHASWARM_CHECKOV=/path/to/checkov to use
another install."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

CHECKOV_VERSION = "3.3.30"
INSTALL_TIMEOUT_SECONDS = 900


def venv_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "alphaswarm_orch" / f"checkov-{CHECKOV_VERSION}"


def checkov_binary() -> str:
    """Path of a checkov executable, installing the pinned version on first use."""
    override = os.environ.get("ALPHASWARM_CHECKOV")
    if override:
        return override
    venv = venv_dir()
    binary = venv / "bin" / "checkov"
    complete = venv / ".complete"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer at a time across test processes
        if not complete.exists():
            shutil.rmtree(venv, ignore_errors=True)  # a half-made venv from a killed run
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            result = subprocess.run(
                [str(venv / "bin" / "pip"), "install", "-q", f"checkov=={CHECKOV_VERSION}"],
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_SECONDS,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"installing checkov=={CHECKOV_VERSION} into {venv} failed:\n"
                    f"{result.stdout}{result.stderr}"
                )
            complete.write_text(CHECKOV_VERSION)
    return str(binary)
