"""Deprecated home of ``ClusterNetwork`` and ``NetworkStats``: import them
from ``fastgossip.testing``. This module re-exports them for one release."""

from .testing import ClusterNetwork, NetworkStats

__all__ = ["ClusterNetwork", "NetworkStats"]
