"""The registry of light steps a workflow spec may name with `op:`.

Light steps run on a light queue of this code location, so they must stay cheap: coordination,
checks and notes. Anything that computes belongs in a dispatched executor task. Each step
declares its parameters as a pydantic model, so a spec with bad parameters fails the load.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field


class LightStepFailed(RuntimeError):
    """A light step's check did not hold; the message says what was expected and seen."""


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LogParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1)


class HttpCheckParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: AnyHttpUrl
    expect_status: int = Field(default=200, ge=100, le=599)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)


def noop(log: logging.Logger, params: NoParams) -> None:
    """A join point: waits for its dependencies and does nothing else."""


def log_message(log: logging.Logger, params: LogParams) -> dict[str, str]:
    """Write a note into the run's event log."""
    log.info(params.message)
    return {"message": params.message}


def http_check(log: logging.Logger, params: HttpCheckParams) -> dict[str, Any]:
    """GET a URL and require a status, e.g. a data service's readiness before a backtest."""
    url = str(params.url)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=params.timeout_seconds) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise LightStepFailed(f"http_check: GET {url} failed: {exc}") from exc
    elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    if status != params.expect_status:
        raise LightStepFailed(
            f"http_check: GET {url} returned {status}, expected {params.expect_status}"
        )
    log.info(f"http_check: GET {url} -> {status} in {elapsed_ms} ms")
    return {"url": url, "status": status, "elapsed_ms": elapsed_ms}


@dataclass(frozen=True)
class LightStep:
    run: Callable[[logging.Logger, Any], Any]
    params: type[BaseModel]


LIGHT_STEPS: Mapping[str, LightStep] = {
    "noop": LightStep(noop, NoParams),
    "log": LightStep(log_message, LogParams),
    "http_check": LightStep(http_check, HttpCheckParams),
}
