"""Exceptions raised by fastgossip."""

from __future__ import annotations

__all__ = ["FrameError", "GossipError", "NodeError", "TableFull"]


class GossipError(Exception):
    """Base class of fastgossip's own exceptions."""


class FrameError(GossipError, ValueError):
    """A frame on the wire is malformed.

    The message says what was wrong and at which byte offset of the frame
    (offset 0 is the first byte of the 4-byte length prefix). ``offset`` holds
    that offset, or -1 where none applies.
    """

    def __init__(self, message: str, offset: int = -1) -> None:
        super().__init__(message)
        self.offset = offset


class NodeError(GossipError):
    """A node could not do what was asked: a failed bind, use after shutdown."""


class TableFull(GossipError, ValueError):
    """A local write does not fit the table's ``max_keys`` / ``max_bytes``."""
