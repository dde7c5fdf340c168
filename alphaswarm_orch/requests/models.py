"""Versioned request schemas, one family per Redis stream (paper, hft, terraform).

Every request is a JSON object with `schema_version`, `type`, `request_id` and `actor`; the
rest depends on the type. Unknown fields are errors (a typo must not be silently ignored).
Every string, terraform variable names and (nested) string values included, passes
`text.unsafe_reason` first (NUL, control and bidi characters are refused naming the field and
the character), and the strings that become run tags are bounded to what the ledger stores.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from alphaswarm_orch.text import TAG_MAX_LENGTH, unsafe_reason

SCHEMA_VERSIONS: tuple[int, ...] = (1,)
"""Schema versions this code location accepts."""

ACTOR_MAX_LENGTH = min(128, TAG_MAX_LENGTH)
"""Longest actor: a run tag, and a ledger column of `TAG_MAX_LENGTH` characters."""

REASON_MAX_LENGTH = 500
"""Longest stop reason (stored on the session's stop key and logged)."""


def _refuse_unsafe(value: Any) -> Any:
    """Runs before type and pattern checks, so the reason names the offending character."""
    if isinstance(value, str):
        reason = unsafe_reason(value)
        if reason is not None:
            raise PydanticCustomError("unsafe_text", "{reason}", {"reason": reason})
    return value


def Text(**constraints: Any) -> Any:
    """A request string: checked by `text.unsafe_reason`, then by `constraints`."""
    return Annotated[str, Field(**constraints), BeforeValidator(_refuse_unsafe)]


RequestId = Text(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
SessionId = Text(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
Symbol = Text(pattern=r"^[A-Z0-9][A-Z0-9._/-]{0,31}$")
Workspace = Text(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
VariableName = Text(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
Actor = Text(min_length=1, max_length=ACTOR_MAX_LENGTH)


class RequestBase(BaseModel):
    """Fields every request carries, whatever its family."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    family: ClassVar[str]
    schema_version: Literal[1]
    request_id: RequestId
    actor: Actor


class SessionStart(RequestBase):
    """Start a session: one long run whose op consumes `ticks:<session_id>`."""

    session_id: SessionId
    symbols: list[Symbol] = Field(min_length=1, max_length=100)
    starting_cash: float = Field(default=100_000.0, gt=0, le=1e12)
    fee_bps: float = Field(default=0.0, ge=0, le=1_000)
    max_position: float = Field(default=1e9, gt=0)
    """Largest absolute position per symbol; orders beyond it are rejected, not filled."""


class SessionStop(RequestBase):
    """Stop a running session cleanly (it finishes the current tick)."""

    session_id: SessionId
    reason: Text(min_length=1, max_length=REASON_MAX_LENGTH) = "stop requested"


class PaperStart(SessionStart):
    family: ClassVar[str] = "paper"
    type: Literal["paper.start"]


class PaperStop(SessionStop):
    family: ClassVar[str] = "paper"
    type: Literal["paper.stop"]


class HftStart(SessionStart):
    family: ClassVar[str] = "hft"
    type: Literal["hft.start"]


class HftStop(SessionStop):
    family: ClassVar[str] = "hft"
    type: Literal["hft.stop"]


class TerraformRequest(RequestBase):
    """Plan, apply (a saved plan, by id) or destroy an allow-listed workspace."""

    family: ClassVar[str] = "terraform"
    type: Literal["terraform.action"]
    workspace: Workspace
    action: Literal["plan", "apply", "destroy"]
    variables: dict[VariableName, Any] = Field(default_factory=dict)
    plan_id: RequestId | None = None

    @field_validator("variables")
    @classmethod
    def _variable_values_are_safe(cls, variables: dict[str, Any]) -> dict[str, Any]:
        for name, value in variables.items():
            if value is None:  # Dagster refuses a null map member when it creates the run
                problem = f"{name}: null is not a value a request can pass; omit the variable"
            else:
                problem = _value_problem(value, name)
            if problem is not None:
                raise PydanticCustomError("unsafe_variable", "{problem}", {"problem": problem})
        return variables

    @model_validator(mode="after")
    def _plan_id_only_for_apply(self) -> TerraformRequest:
        if self.action == "apply" and self.plan_id is None:
            raise ValueError("action 'apply' needs plan_id: apply runs a saved plan, by its id")
        if self.action != "apply" and self.plan_id is not None:
            raise ValueError(f"plan_id is only for action 'apply', not {self.action!r}")
        return self


def _value_problem(value: Any, path: str) -> str | None:
    """Why a variable's value may not enter, or None: every string in it (map keys included)
    passes the same text check as request fields."""
    if isinstance(value, str):
        reason = unsafe_reason(value)
        return None if reason is None else f"{path}: {reason}"
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = _value_problem(item, f"{path}.{index}")
            if problem is not None:
                return problem
    if isinstance(value, dict):
        for key, item in value.items():
            reason = unsafe_reason(key) if isinstance(key, str) else None
            if reason is not None:
                return f"{path} key: {reason}"
            problem = _value_problem(item, f"{path}.{key}")
            if problem is not None:
                return problem
    return None


PaperRequest = Annotated[PaperStart | PaperStop, Field(discriminator="type")]
HftRequest = Annotated[HftStart | HftStop, Field(discriminator="type")]
Request = PaperStart | PaperStop | HftStart | HftStop | TerraformRequest

REQUEST_TYPES: dict[str, tuple[type[RequestBase], ...]] = {
    "paper": (PaperStart, PaperStop),
    "hft": (HftStart, HftStop),
    "terraform": (TerraformRequest,),
}
"""Family -> the request types its stream may carry."""

_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    "paper": TypeAdapter(PaperRequest),
    "hft": TypeAdapter(HftRequest),
    "terraform": TypeAdapter(TerraformRequest),
}


def request_adapter(family: str) -> TypeAdapter[Any]:
    """The pydantic adapter that validates one request of `family`."""
    try:
        return _ADAPTERS[family]
    except KeyError:
        raise ValueError(
            f"unknown request family {family!r}: expected one of {', '.join(_ADAPTERS)}"
        ) from None


def type_names(family: str) -> list[str]:
    """The `type` values a family accepts, e.g. ['paper.start', 'paper.stop']."""
    request_adapter(family)
    return [t.model_fields["type"].annotation.__args__[0] for t in REQUEST_TYPES[family]]
