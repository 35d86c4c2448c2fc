"""Type stub of the compiled LWW table (_table_c.pyx); _table_py.py is its twin.

Entries are typed as the abstract ``fastgossip.Entry`` (_messages.py), which
the twin's entries are too: the switch module _table.py types both with this stub.
"""

from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union, final

from _typeshed import ReadableBuffer

from . import _messages
from ._codec_c import Entry as Entry
from ._messages import Value
from .errors import TableFull as TableFull

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "ENTRY_OVERHEAD",
    "MAX_LIFE_CHARS",
    "MAX_NODE_ID_BYTES",
    "MAX_ORIGIN_BYTES",
    "REFUSAL_KINDS",
    "Entry",
    "GossipState",
    "TableFull",
    "relay_size",
]

DEFAULT_MAX_FRAME_SIZE: int
ENTRY_OVERHEAD: int
MAX_LIFE_CHARS: int
MAX_NODE_ID_BYTES: int
MAX_ORIGIN_BYTES: int
REFUSAL_KINDS: Tuple[str, ...]

def relay_size(key: str, value: Value, origin: str) -> int: ...

@final
class GossipState:
    own_origin: Optional[str]
    refuse_stale: bool
    max_keys: Optional[int]
    max_bytes: Optional[int]
    def __init__(self, max_keys: Optional[int] = None, max_bytes: Optional[int] = None) -> None: ...
    @property
    def bytes_held(self) -> int: ...
    @property
    def changes(self) -> int: ...
    @property
    def own_refused_stamp(self) -> int: ...
    def refusals(self) -> Dict[str, int]: ...
    def set_capture(self, prefixes: Iterable[str]) -> None: ...
    def take_captured(self) -> List[_messages.Entry]: ...
    def set_stale_exempt(self, origins: Iterable[str]) -> None: ...
    def restamp(self, origin: str, first_stamp: int) -> int: ...
    def set(
        self, key: str, value: Value, version: int, origin: str = "", stamp: Optional[int] = None
    ) -> bool: ...
    def merge(
        self,
        entries: Iterable[Union[_messages.Entry, _messages.Gossip]],
        max_frame_size: int = ...,
        max_stamp: int = ...,
        max_version: int = ...,
    ) -> List[_messages.Entry]: ...
    def merge_frame(
        self,
        frame: ReadableBuffer,
        max_frame_size: int = ...,
        max_stamp: int = ...,
        max_version: int = ...,
    ) -> int: ...
    def get(self, key: str) -> Optional[Tuple[Value, int]]: ...
    def get_entry(self, key: str) -> Optional[_messages.Entry]: ...
    def keys(self) -> List[str]: ...
    def __len__(self) -> int: ...
    def __bool__(self) -> bool: ...
    def __contains__(self, key: object, /) -> bool: ...
    def __iter__(self) -> Iterator[_messages.Entry]: ...
    @property
    def max_version(self) -> int: ...
    def origin_stats(self) -> Dict[str, Tuple[int, int, int]]: ...
    def watermarks(self) -> Dict[str, int]: ...
    def clear(self) -> None: ...
    def delta(
        self, watermarks: Mapping[str, int], limit: Optional[int] = None
    ) -> List[_messages.Entry]: ...
    def delta_frames(
        self,
        sender_id: str,
        watermarks: Mapping[str, int],
        max_frame_size: int = ...,
        max_bytes: Optional[int] = None,
    ) -> List[bytes]: ...
