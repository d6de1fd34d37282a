"""Reputation earned from evidence that other nodes record, never from a node's own word."""

from hypercore.reputation.evidence import EvidenceLog, Observation
from hypercore.reputation.score import PRIOR, Evidence, beta_score, weighted_median
from hypercore.reputation.service import Reputation

__all__ = ["PRIOR", "Evidence", "EvidenceLog", "Observation", "Reputation", "beta_score", "weighted_median"]
