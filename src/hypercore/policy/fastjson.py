"""The fast way through strict JSON: jiter (pydantic's Rust parser) when the text can take it.

`loader.parse_json_strict` refuses what Python's json module would accept
silently: NaN/Infinity, duplicate keys, integers of more than 1,000 digits and
floats that overflow to infinity. Doing that with json's Python hooks costs a
Python call per object and per number (0.3 s for a 20 MB nodes file). jiter
refuses NaN/Infinity and duplicate keys by itself, in Rust. Numbers it cannot
be asked to refuse are looked for in the text first (see _risky_numbers): a
text that has none, and that jiter accepts, gives the same values as the
careful parse. Anything else returns NOT_FAST and the careful parse runs and
says what is wrong and where (tests/policy/test_fast_json.py checks both ways
agree).
"""

from __future__ import annotations

from typing import Any

import jiter

from hypercore.policy.gcpause import gc_paused

NOT_FAST: Any = object()  # parse_fast's answer when the careful parse must decide

# Every number a float or int cannot hold faithfully has 200 digits or more, or an exponent of three
# digits or more (10^(199+99) is far from float's 1.8e308). To find them, digits become "0", e/E "e",
# "+" and "-" are dropped and every other byte becomes a space; the result is searched for two plain
# substrings: a few ms for 20 MB, where a regular expression takes a tenth of a second. Dropping
# signs can only join text into a match, never hide one; a match that is no number (inside a string,
# say) only costs the careful way.
_NUMBER_SHAPE = bytes(48 if 48 <= b <= 57 else 101 if b in b"eE" else 32 for b in range(256))
_RISKY = (b"0" * 200, b"0e000")
_LARGE = 1 << 20  # bytes; below this the collector's walks cost nothing worth pausing it for


def _risky_numbers(data: bytes) -> bool:
    shape = data.translate(_NUMBER_SHAPE, b"+-")
    return any(risky in shape for risky in _RISKY)


def parse_fast(text: str) -> Any:
    """The parsed value of `text`, or NOT_FAST when the careful parse must decide (it may still accept)."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: json takes it, jiter would not
        return NOT_FAST
    if _risky_numbers(data):
        return NOT_FAST
    try:
        if len(data) < _LARGE:
            return jiter.from_json(data, allow_inf_nan=False, catch_duplicate_keys=True, cache_mode="keys")
        with gc_paused():  # 100,000 node records: see gc_paused
            return jiter.from_json(data, allow_inf_nan=False, catch_duplicate_keys=True, cache_mode="keys")
    except (ValueError, RecursionError):
        return NOT_FAST
