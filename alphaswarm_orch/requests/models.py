"""Versioned request schemas, one family per Redis stream (paper, hft, terraform).

Every request is a JSON object with `schema_version`, `type`, `request_id` and `actor`; the
rest depends on the type. Unknown fields are errors (a typo must not be silently ignored).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

SCHEMA_VERSIONS: tuple[int, ...] = (1,)
"""Schema versions this code location accepts."""

RequestId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
SessionId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
Symbol = Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9._/-]{0,31}$")]
Workspace = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]


class RequestBase(BaseModel):
    """Fields every request carries, whatever its family."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    family: ClassVar[str]
    schema_version: Literal[1]
    request_id: RequestId
    actor: str = Field(min_length=1, max_length=128)


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
    reason: str = Field(default="stop requested", min_length=1, max_length=500)


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
    variables: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")], Any] = Field(
        default_factory=dict
    )
    plan_id: RequestId | None = None

    @model_validator(mode="after")
    def _plan_id_only_for_apply(self) -> TerraformRequest:
        if self.action == "apply" and self.plan_id is None:
            raise ValueError("action 'apply' needs plan_id: apply runs a saved plan, by its id")
        if self.action != "apply" and self.plan_id is not None:
            raise ValueError(f"plan_id is only for action 'apply', not {self.action!r}")
        return self


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
