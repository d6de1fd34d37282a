"""The placement protocol: owners, per-request-id locks, attempts with deadlines, retraction, late starts.

See docs/placement-protocol.md. The origin's side is `Scheduler`, the chosen
node's side `Receiver`, request forwarding `forward_to_owner`; every call
between nodes goes through hypercore.transport, so the whole protocol also
runs in-process against a fake cluster (tests/inprocess).
"""

from hypercore.placement.forwarding import FORWARD_TIMEOUT_S, Forwarded, OwnerGarbled, OwnerTimeout, forward_to_owner
from hypercore.placement.ids import REQUEST_NAMESPACE, rendezvous_rank, request_rank, user_request_id, workload_id_for
from hypercore.placement.model import Attempt, DeadlinePassed, Placement, PlacementFailed
from hypercore.placement.receiver import Receiver
from hypercore.placement.scheduler import Scheduler

__all__ = [
    "FORWARD_TIMEOUT_S",
    "REQUEST_NAMESPACE",
    "Attempt",
    "DeadlinePassed",
    "Forwarded",
    "OwnerGarbled",
    "OwnerTimeout",
    "Placement",
    "PlacementFailed",
    "Receiver",
    "Scheduler",
    "forward_to_owner",
    "rendezvous_rank",
    "request_rank",
    "user_request_id",
    "workload_id_for",
]
