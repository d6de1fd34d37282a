"""The placement policy language: hard rules, scoring weights, scales and mode.

The model is strict on purpose: unknown keys are errors (a typo such as
``max_latncy_ms`` must not silently drop a constraint), numbers must be finite
and within range, and strings are not coerced into numbers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Rule keys that the spec's flat examples put at the top level of a policy.
RULE_KEYS: tuple[str, ...] = (
    "required_capabilities",
    "max_latency_ms",
    "max_jitter_ms",
    "max_packet_loss",
    "max_price_per_gb",
    "min_reputation_score",
    "max_queue_depth",
)

# Keys of the original system, accepted (as booleans, in rules or at the top level)
# so its policies load; they have no effect, as they had none there. `policy
# validate` and `explain` warn about them.
DEPRECATED_KEYS: tuple[str, ...] = ("prefer_low_latency", "prefer_low_price", "prefer_high_reputation")
_FLAT_KEYS = RULE_KEYS + DEPRECATED_KEYS

DEFAULT_WEIGHT = 0.25

NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Capability = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Rules(_Strict):
    """Hard constraints. Absent or null means no limit; 0 means a literal zero."""

    required_capabilities: list[Capability] | None = Field(
        default=None, max_length=32, description="Capabilities a node must advertise (all of them)."
    )
    max_latency_ms: NonNegative | None = Field(default=None, description="Highest median RTT in ms.")
    max_jitter_ms: NonNegative | None = Field(default=None, description="Highest jitter in ms.")
    max_packet_loss: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] | None = Field(
        default=None, description="Highest packet loss, percent (0..100)."
    )
    max_price_per_gb: NonNegative | None = Field(default=None, description="Highest price per GB.")
    min_reputation_score: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = Field(
        default=None, description="Lowest reputation (0..1)."
    )
    max_queue_depth: NonNegative | None = Field(
        default=None, description="Most workloads assigned and not yet finished."
    )

    prefer_low_latency: bool | None = Field(
        default=None, exclude=True, json_schema_extra={"deprecated": True},
        description="Deprecated, no effect (the weights rank nodes); accepted so old policies load.")
    prefer_low_price: bool | None = Field(
        default=None, exclude=True, json_schema_extra={"deprecated": True},
        description="Deprecated, no effect (the weights rank nodes); accepted so old policies load.")
    prefer_high_reputation: bool | None = Field(
        default=None, exclude=True, json_schema_extra={"deprecated": True},
        description="Deprecated, no effect (the weights rank nodes); accepted so old policies load.")

    def deprecated_given(self) -> list[str]:
        """The deprecated prefer_* keys this policy sets (they have no effect)."""
        return [k for k in DEPRECATED_KEYS if getattr(self, k) is not None]

    @field_validator("required_capabilities")
    @classmethod
    def _dedupe(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else sorted(set(value))

    def zero_limits(self) -> list[str]:
        """Names of max_* rules set to 0: legal, but usually a mistake."""
        return [k for k in RULE_KEYS if k.startswith("max_") and getattr(self, k) == 0]


class Scales(_Strict):
    """What a metric value must reach for its fixed-normalized score to hit 0."""

    latency_ms: Positive = 200.0
    price_per_gb: Positive = 1.0
    queue_depth: Positive = 100.0


class Scoring(_Strict):
    """Weights of the score components; all zero or absent means 0.25 each."""

    latency_weight: NonNegative | None = None
    price_weight: NonNegative | None = None
    reputation_weight: NonNegative | None = None
    queue_weight: NonNegative | None = None
    scales: Scales = Field(default_factory=Scales)
    normalization: Literal["fixed", "relative"] = Field(
        default="fixed",
        description="fixed: the spec's formula with these scales; "
        "relative: min-max across the nodes that passed the rules.",
    )

    def weights(self) -> tuple[float, float, float, float]:
        """(latency, price, reputation, queue) weights with the spec's default applied."""
        raw = (self.latency_weight, self.price_weight, self.reputation_weight, self.queue_weight)
        if all(not w for w in raw):
            return (DEFAULT_WEIGHT,) * 4
        return tuple(float(w or 0.0) for w in raw)  # type: ignore[return-value]


def _flat_rules_schema(schema: dict[str, Any], _cls: Any) -> None:
    # The flat form (rules at the top level) is valid input, so the schema
    # that `policy schema` prints must allow it too.
    rules = Rules.model_json_schema()["properties"]
    for key in _FLAT_KEYS:
        schema["properties"][key] = {**rules[key], "description": f"Flat form of rules.{key}."}


class Policy(_Strict):
    """A placement policy. Accepts the nested form and the spec's flat form."""

    model_config = ConfigDict(json_schema_extra=_flat_rules_schema)

    name: str = Field(default="unnamed", min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")
    description: str = Field(default="", max_length=4096)
    mode: Literal["enforce", "permissive"] = "enforce"
    strategy: Literal["spread", "binpack"] | None = Field(
        default=None,
        description="Among the nodes that fit: spread = least allocated first, binpack = most allocated first "
                    "(the weights break ties). Absent: the weights alone decide.",
    )
    rules: Rules = Field(default_factory=Rules)
    scoring: Scoring = Field(default_factory=Scoring)

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        # No control characters (C0, DEL, C1) and no bidirectional overrides: a name prints as what it is.
        bad = sorted({c for c in value if c == "\x7f" or "\x80" <= c <= "\x9f" or "\u202a" <= c <= "\u202e"
                      or "\u2066" <= c <= "\u2069"})
        if bad:
            shown = ", ".join(f"U+{ord(c):04X}" for c in bad)
            raise ValueError(f"names must not hold control characters or text-direction overrides ({shown})")
        return value

    @model_validator(mode="before")
    @classmethod
    def _lift_flat_rules(cls, data: Any) -> Any:
        # The spec's low-latency.json and cost-optimized.json put rules at the
        # top level; fold them into `rules` so both forms load the same policy.
        if not isinstance(data, dict):
            return data
        flat = {k: data[k] for k in _FLAT_KEYS if k in data}
        if not flat:
            return data
        nested = data.get("rules")
        if nested is None:
            nested = {}
        if not isinstance(nested, dict):
            return data  # let field validation report the bad `rules` value
        both = sorted(set(flat) & set(nested))
        if both:
            raise ValueError(
                f"rule {both[0]!r} is given both at the top level and under 'rules'; give it once"
            )
        rest = {k: v for k, v in data.items() if k not in flat}
        rest["rules"] = {**nested, **flat}
        return rest

    def with_required_capabilities(self, extra: list[str]) -> "Policy":
        """A copy whose rules also require `extra` (a spawn's own needs)."""
        have = set(self.rules.required_capabilities or [])
        if set(extra) <= have:
            return self
        rules = self.rules.model_copy(update={"required_capabilities": sorted(have | set(extra))})
        return self.model_copy(update={"rules": rules})


PERMISSIVE_DEFAULT = Policy(
    name="default-permissive",
    description="Built-in default: any alive node, ranked with the spec's default weights.",
    mode="permissive",
)
