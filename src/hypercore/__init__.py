"""hypercore: policy-driven workload placement for decentralized compute clusters."""

__version__ = "0.1.0"
