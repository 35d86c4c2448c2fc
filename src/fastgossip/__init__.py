"""fastgossip: cluster-wide key/value state by epidemic gossip over TCP."""
from ._impl import IMPLEMENTATION
from .errors import FrameError, GossipError, NodeError

__version__ = "0.1.0"
