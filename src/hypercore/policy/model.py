"""The placement policy language: hard rules, scoring weights, scales and mode.

The metric keys (rules, weights, scales) come from a metric registry
(policy.registry): `policy_models(registry)` builds the models, and Rules,
Scales, Scoring and Policy here are those of DEFAULT_REGISTRY.

The model is strict on purpose: unknown keys are errors (a typo such as
``max_latncy_ms`` must not silently drop a constraint), numbers must be finite
and within range, and strings are not coerced into numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from hypercore.policy.registry import DEFAULT_REGISTRY, Metric, MetricRegistry

# Keys of the original system, accepted (as booleans, in rules or at the top level)
# so its policies load; they have no effect, as they had none there. `policy
# validate` and `explain` warn about them.
DEPRECATED_KEYS: tuple[str, ...] = ("prefer_low_latency", "prefer_low_price", "prefer_high_reputation")

DEFAULT_WEIGHT = 0.25

NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Capability = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
_DEPRECATED_DOC = "Deprecated, no effect (the weights rank nodes); accepted so old policies load."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def metric_range(metric: Metric) -> Any:
    """The values a node may report for `metric` (and a rule may set): finite, 0..maximum."""
    if metric.maximum is None:
        return NonNegative
    return Annotated[float, Field(ge=0, le=metric.maximum, allow_inf_nan=False)]


class RulesBase(_Strict):
    """Hard constraints. Absent or null means no limit; 0 means a literal zero.

    The metric rules (max_latency_ms, min_reputation_score, ...) are fields of
    the subclass policy_models() builds from a metric registry.
    """

    registry: ClassVar[MetricRegistry] = DEFAULT_REGISTRY

    required_capabilities: list[Capability] | None = Field(
        default=None, max_length=32, description="Capabilities a node must advertise (all of them)."
    )

    def limit(self, metric: Metric) -> float | None:
        """The policy's limit on `metric` (None: no rule)."""
        return None if metric.rule is None else getattr(self, metric.rule)

    def deprecated_given(self) -> list[str]:
        """The deprecated prefer_* keys this policy sets (they have no effect)."""
        return [k for k in DEPRECATED_KEYS if getattr(self, k) is not None]

    @field_validator("required_capabilities")
    @classmethod
    def _dedupe(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else sorted(set(value))

    def zero_limits(self) -> list[str]:
        """Names of max_* rules set to 0: legal, but usually a mistake."""
        return [m.rule for m in self.registry.ruled if not m.rule_is_lower_bound and self.limit(m) == 0]  # type: ignore[misc]


class ScalesBase(_Strict):
    """What a metric value must reach for its fixed-normalized score to hit 0 (one key per scored metric)."""


class ScoringBase(_Strict):
    """Weights of the score components; all zero or absent means 0.25 each (1/n for n components)."""

    registry: ClassVar[MetricRegistry] = DEFAULT_REGISTRY

    def weights(self) -> tuple[float, ...]:
        """One weight per score component (registry order), with the spec's default applied."""
        raw = tuple(getattr(self, m.weight_key) for m in self.registry.scored)  # type: ignore[arg-type]
        if all(not w for w in raw):
            return (DEFAULT_WEIGHT if len(raw) == 4 else 1.0 / len(raw),) * len(raw)
        return tuple(float(w or 0.0) for w in raw)

    def scale(self, metric: Metric) -> float:
        """The fixed-normalization scale of a scored metric (1.0 for one scored as it is, 0..1)."""
        return 1.0 if metric.scale_key is None else getattr(self.scales, metric.scale_key)


class PolicyBase(_Strict):
    """A placement policy. Accepts the nested form and the spec's flat form."""

    registry: ClassVar[MetricRegistry] = DEFAULT_REGISTRY

    name: str = Field(default="unnamed", min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")
    description: str = Field(default="", max_length=4096)
    mode: Literal["enforce", "permissive"] = "enforce"
    strategy: Literal["spread", "binpack"] | None = Field(
        default=None,
        description="Among the nodes that fit: spread = least allocated first, binpack = most allocated first "
                    "(the weights break ties). Absent: the weights alone decide.",
    )

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
        flat = {k: data[k] for k in flat_keys(cls.registry) if k in data}
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

    def with_required_capabilities(self, extra: list[str]) -> Self:
        """A copy whose rules also require `extra` (a spawn's own needs)."""
        rules = self.rules  # type: ignore[attr-defined]
        have = set(rules.required_capabilities or [])
        if set(extra) <= have:
            return self
        rules = rules.model_copy(update={"required_capabilities": sorted(have | set(extra))})
        return self.model_copy(update={"rules": rules})


def rule_keys(registry: MetricRegistry) -> tuple[str, ...]:
    """Rule keys that the spec's flat examples put at the top level of a policy."""
    return ("required_capabilities", *registry.rule_keys)


def flat_keys(registry: MetricRegistry) -> tuple[str, ...]:
    return rule_keys(registry) + DEPRECATED_KEYS


# What `policy schema` says of each object.
_RULES_DOC = "Hard constraints. Absent or null means no limit; 0 means a literal zero."
_SCALES_DOC = "What a metric value must reach for its fixed-normalized score to hit 0."
_SCORING_DOC = "Weights of the score components; all zero or absent means 0.25 each."
_POLICY_DOC = "A placement policy. Accepts the nested form and the spec's flat form."


@dataclass(frozen=True)
class PolicyModels:
    """The policy language of one metric registry: its pydantic models."""

    registry: MetricRegistry
    rules: type[RulesBase]
    scales: type[ScalesBase]
    scoring: type[ScoringBase]
    policy: type[PolicyBase]


@cache
def policy_models(registry: MetricRegistry) -> PolicyModels:
    """The Rules, Scales, Scoring and Policy models whose metric keys come from `registry`."""
    rule_fields: dict[str, Any] = {
        m.rule: (metric_range(m) | None, Field(default=None, description=m.rule_doc)) for m in registry.ruled
    }
    for key in DEPRECATED_KEYS:
        rule_fields[key] = (bool | None, Field(default=None, exclude=True, json_schema_extra={"deprecated": True},
                                               description=_DEPRECATED_DOC))
    rules = create_model("Rules", __base__=RulesBase, __module__=__name__, __doc__=_RULES_DOC, **rule_fields)
    rules.registry = registry
    scales = create_model("Scales", __base__=ScalesBase, __module__=__name__, __doc__=_SCALES_DOC, **{
        m.scale_key: (Positive, m.default_scale) for m in registry.scored if m.scale_key})  # type: ignore[misc]
    scoring_fields: dict[str, Any] = {m.weight_key: (NonNegative | None, None) for m in registry.scored}
    scoring_fields["scales"] = (scales, Field(default_factory=scales))
    scoring_fields["normalization"] = (Literal["fixed", "relative"], Field(
        default="fixed", description="fixed: the spec's formula with these scales; "
                                     "relative: min-max across the nodes that passed the rules."))
    scoring = create_model("Scoring", __base__=ScoringBase, __module__=__name__, __doc__=_SCORING_DOC,
                           **scoring_fields)
    scoring.registry = registry

    def flat_rules_schema(schema: dict[str, Any], _cls: Any) -> None:
        # The flat form (rules at the top level) is valid input, so the schema
        # that `policy schema` prints must allow it too.
        props = rules.model_json_schema()["properties"]
        for key in flat_keys(registry):
            schema["properties"][key] = {**props[key], "description": f"Flat form of rules.{key}."}

    policy = create_model("Policy", __base__=PolicyBase, __module__=__name__, __doc__=_POLICY_DOC,
                          rules=(rules, Field(default_factory=rules)), scoring=(scoring, Field(default_factory=scoring)))
    policy.model_config["json_schema_extra"] = flat_rules_schema
    policy.model_rebuild(force=True)
    policy.registry = registry
    return PolicyModels(registry, rules, scales, scoring, policy)


_DEFAULT = policy_models(DEFAULT_REGISTRY)
Rules = _DEFAULT.rules
Scales = _DEFAULT.scales
Scoring = _DEFAULT.scoring
Policy = _DEFAULT.policy
RULE_KEYS: tuple[str, ...] = rule_keys(DEFAULT_REGISTRY)

PERMISSIVE_DEFAULT = Policy(
    name="default-permissive",
    description="Built-in default: any alive node, ranked with the spec's default weights.",
    mode="permissive",
)
