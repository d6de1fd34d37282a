"""The agent's start-up heap, kept out of the cyclic garbage collector's way.

A started agent holds about 100,000 objects that live as long as it does: its
modules, classes and functions, the web app, the policy engine. Python's full
collection visits every one of them, and it comes whenever enough survivors
of younger collections have piled up: 75-160 ms measured in 10 agents
(bench/README.md, "Fewer handshakes counted, a frozen heap"), an event loop
stalled for that long, so a spawn or a probe answer now and then late by a
tenth of a second. Frozen after start-up (the permanent generation), they are
never visited again; a full collection visits what came later.

The price: an object alive at the freeze that later becomes part of a garbage
cycle (the first policy's engine after a SIGHUP reload, say) is never freed.
Nothing made later is frozen, so that is bounded by the start-up heap itself
(a few MB), once.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect start-up's garbage, then freeze every object that survived; returns how many are frozen."""
    gc.collect()  # what is frozen is never collected: start-up's cycles go first
    gc.freeze()
    return gc.get_freeze_count()
