"""Property-based tests: the loader never fails other than with PolicyError; scores are monotone and sane."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hypercore.policy import Policy, PolicyError, decide, loads_policy, parse_policy
from hypercore.policy.model import RULE_KEYS

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- JSON values

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
# A lighter variant for values nested under policy keys (keeps generation fast).
small_json = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=5,
)

# Values that are often valid for a given key, mixed with arbitrary JSON.
numbers = st.one_of(
    st.integers(-5, 1000),
    st.floats(-10, 1000),
    st.floats(0, 1),
    st.sampled_from([0, 0.0, -0.0, 1, 100, 1e-9, 1e308, float("nan"), float("inf"), -1]),
)
maybe_number = st.one_of(numbers, st.none(), st.booleans(), st.text(max_size=5), small_json)
capabilities = st.one_of(
    st.lists(st.sampled_from(["gpu", "exec", "container", "", "bad cap", "x" * 70, "a.b:c-d_e"]), max_size=5),
    small_json,
)
rules_dicts = st.fixed_dictionaries(
    {},
    optional={
        **{k: maybe_number for k in RULE_KEYS if k != "required_capabilities"},
        "required_capabilities": capabilities,
        "max_latncy_ms": maybe_number,  # the typo must never be silently accepted
    },
)
scales_dicts = st.fixed_dictionaries(
    {}, optional={"latency_ms": maybe_number, "price_per_gb": maybe_number, "queue_depth": maybe_number, "extra": st.just(1)}
)
scoring_dicts = st.fixed_dictionaries(
    {},
    optional={
        "latency_weight": maybe_number,
        "price_weight": maybe_number,
        "reputation_weight": maybe_number,
        "queue_weight": maybe_number,
        "scales": st.one_of(scales_dicts, small_json),
        "normalization": st.one_of(st.sampled_from(["fixed", "relative", "Fixed", ""]), small_json),
    },
)
policy_dicts = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.text(max_size=140), small_json),
        "description": st.one_of(st.text(max_size=30), small_json),
        "mode": st.one_of(st.sampled_from(["enforce", "permissive", "strict", ""]), small_json),
        "rules": st.one_of(rules_dicts, st.none(), small_json),
        "scoring": st.one_of(scoring_dicts, st.none(), small_json),
        **{k: maybe_number for k in RULE_KEYS if k != "required_capabilities"},
        "required_capabilities": capabilities,
        "unknown_key": small_json,
    },
)
anything = st.one_of(json_values, policy_dicts)


def _policy_or_error(fn, *args):
    try:
        result = fn(*args)
    except PolicyError as exc:
        assert exc.problems, "a PolicyError must carry at least one problem"
        assert str(exc).strip()
        return exc
    assert isinstance(result, Policy)
    return result


@SETTINGS
@given(value=anything)
def test_parse_policy_yields_policy_or_policy_error(value):
    out = _policy_or_error(parse_policy, value, "prop.json")
    if isinstance(value, dict) and (
        "max_latncy_ms" in value or (isinstance(value.get("rules"), dict) and "max_latncy_ms" in value["rules"])
    ):
        assert isinstance(out, PolicyError), "the typo max_latncy_ms was silently accepted"
    if isinstance(out, PolicyError):
        assert all(p.source == "prop.json" for p in out.problems)
    else:
        # a valid policy has only finite, in-range numbers
        for key in RULE_KEYS[1:]:
            v = getattr(out.rules, key)
            assert v is None or (math.isfinite(v) and v >= 0)
        assert all(math.isfinite(w) and w >= 0 for w in out.scoring.weights())


@SETTINGS
@given(value=anything)
def test_loads_policy_of_json_text_yields_policy_or_policy_error(value):
    try:
        text = json.dumps(value)  # NaN/Infinity become the non-JSON literals NaN/Infinity
    except (ValueError, OverflowError):
        assume(False)
    out = _policy_or_error(loads_policy, text, "prop.json")
    if isinstance(value, dict) and "max_latncy_ms" in value:
        assert isinstance(out, PolicyError)
    if isinstance(out, Policy):
        # loading the policy's own JSON gives the same policy back
        assert loads_policy(json.dumps(out.model_dump(mode="json"))) == out


@SETTINGS
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_loads_policy_of_arbitrary_text_yields_policy_or_policy_error(text):
    _policy_or_error(loads_policy, text, "prop.json")


# --------------------------------------------------------------------------- monotonicity

WEIGHT_KEYS = {"latency_ms": "latency_weight", "price_per_gb": "price_weight", "reputation": "reputation_weight", "queue_depth": "queue_weight"}

metric_values = {
    "latency_ms": st.floats(0, 1000, allow_nan=False),
    "price_per_gb": st.floats(0, 2, allow_nan=False),
    "reputation": st.floats(0, 1, allow_nan=False),
    "queue_depth": st.floats(0, 300, allow_nan=False),
}


def _maybe(strategy):
    return st.one_of(st.none(), strategy, strategy, strategy)


@st.composite
def scoring_setups(draw):
    weights = {k: draw(st.one_of(st.just(0.0), st.floats(0, 10, allow_nan=False))) for k in WEIGHT_KEYS.values()}
    scales = {
        "latency_ms": draw(st.floats(1, 1000)),
        "price_per_gb": draw(st.floats(0.001, 2)),
        "queue_depth": draw(st.floats(1, 500)),
    }
    normalization = draw(st.sampled_from(["fixed", "relative"]))
    return {**weights, "scales": scales, "normalization": normalization}


@st.composite
def node_lists(draw, min_size=1, max_size=7):
    n = draw(st.integers(min_size, max_size))
    nodes = []
    for i in range(n):
        rec = {"name": f"n{i}", "status": draw(st.sampled_from(["alive", "alive", "alive", "failed"]))}
        for metric, strat in metric_values.items():
            v = draw(_maybe(strat))
            if v is not None:
                rec[metric] = v
        nodes.append(rec)
    return nodes


@settings(max_examples=250, deadline=None)
@given(data=st.data(), nodes=node_lists(), setup=scoring_setups(), mode=st.sampled_from(["enforce", "permissive"]))
def test_improving_one_metric_never_lowers_own_score(data, nodes, setup, mode):
    i = data.draw(st.integers(0, len(nodes) - 1), label="node")
    nodes[i]["status"] = "alive"
    metric = data.draw(st.sampled_from(sorted(WEIGHT_KEYS)), label="metric")
    setup[WEIGHT_KEYS[metric]] = data.draw(st.floats(0.001, 10), label="positive weight")
    lo, hi = {"latency_ms": (0, 1000), "price_per_gb": (0, 2), "reputation": (0, 1), "queue_depth": (0, 300)}[metric]
    before_value = data.draw(st.floats(lo, hi), label="before")
    if metric == "reputation":  # higher is better
        after_value = data.draw(st.floats(before_value, hi), label="after")
    else:  # lower is better
        after_value = data.draw(st.floats(lo, before_value), label="after")
    policy = parse_policy({"mode": mode, "scoring": setup})  # no rules: the candidate set cannot change

    def score_of(value):
        recs = [dict(r) for r in nodes]
        recs[i][metric] = value
        d = decide(policy, recs)
        return {r.node: r.score for r in d.ranked}

    before = score_of(before_value)
    after = score_of(after_value)
    me = nodes[i]["name"]
    assert after[me] >= before[me] - 1e-12, (metric, before_value, after_value, before[me], after[me])
    if setup["normalization"] == "fixed":
        # fixed scores are per node: nobody else moves
        assert {k: v for k, v in after.items() if k != me} == {k: v for k, v in before.items() if k != me}


@settings(max_examples=150, deadline=None)
@given(
    nodes=node_lists(max_size=8),
    setup=scoring_setups(),
    mode=st.sampled_from(["enforce", "permissive"]),
    big=st.booleans(),
)
def test_scores_finite_nonnegative_and_bounded(nodes, setup, mode, big):
    if big:  # extreme but valid metric values
        for r in nodes:
            if "latency_ms" in r:
                r["latency_ms"] *= 1e300
            if "queue_depth" in r:
                r["queue_depth"] *= 1e300
    policy = parse_policy({"mode": mode, "scoring": setup})
    weights = dict(zip(("latency", "price", "reputation", "queue"), policy.scoring.weights()))
    d = decide(policy, nodes)
    for r in d.ranked:
        assert math.isfinite(r.score) and r.score >= 0
        for comp, value in r.components.items():
            assert math.isfinite(value)
            assert 0 <= value <= weights[comp] * (1 + 1e-12), (comp, value, weights[comp])
        assert math.isclose(r.score, sum(r.components.values()), rel_tol=1e-9, abs_tol=1e-12)
    alive = {r["name"] for r in nodes if r["status"] == "alive"}
    assert set(d.ranked.node_names) == alive  # no rules: every alive node, and only those
