"""The public message types are abstract: isinstance holds for either implementation.

``fastgossip.Entry``, ``fastgossip.Gossip``, ... (fastgossip/_messages.py) are
registered with by both the compiled codec and the twin, so a message made by
either one, or read from a node running either one, is a ``fastgossip.Entry``;
calling them constructs the live implementation's class.
"""

from __future__ import annotations

import pickle
from types import ModuleType
from typing import Any, Dict, Tuple

import pytest

import fastgossip
from fastgossip import _codec

from .conftest import wait_for

NAMES = ["Entry", "Gossip", "Ping", "Pong", "Replicate", "ReplicateAck", "GossipBatch", "Digest"]

ARGS: Dict[str, Tuple[Any, ...]] = {
    "Entry": ("k", b"v", 7, "o", 9),
    "Gossip": ("s", "k", 3, 7, "o"),
    "Ping": ("s", 1),
    "Pong": ("s", 2),
    "Replicate": ("l", 1, 2, 3, b"p"),
    "ReplicateAck": ("f", 1, True),
    "GossipBatch": ("s", ()),
    "Digest": ("s", {"o": 4}, True),
}


def make(codec: ModuleType, name: str) -> Any:
    args = ARGS[name]
    if name == "GossipBatch":
        args = ("s", (codec.Entry(*ARGS["Entry"]),))
    return getattr(codec, name)(*args)


@pytest.mark.parametrize("name", NAMES)
def test_every_message_is_an_instance_of_its_public_type(codec: ModuleType, name: str) -> None:
    msg = make(codec, name)
    public = getattr(fastgossip, name)
    assert isinstance(msg, public)
    assert isinstance(msg, fastgossip.Message)
    assert issubclass(type(msg), public)
    for other in NAMES:
        if other != name:
            assert not isinstance(msg, getattr(fastgossip, other)), other


def test_decoded_messages_are_instances_of_the_public_types(codec: ModuleType) -> None:
    batch = make(codec, "GossipBatch")
    decoded = codec.decode(codec.encode(batch))
    assert isinstance(decoded, fastgossip.GossipBatch)
    assert all(isinstance(e, fastgossip.Entry) for e in decoded.entries)
    for name in NAMES[1:]:
        assert isinstance(codec.decode(codec.encode(make(codec, name))), fastgossip.Message)


def test_table_entries_are_public_entries(table: ModuleType) -> None:
    state = table.GossipState()
    state.set("k", b"v", 5, "o")
    entry = state.get_entry("k")
    assert isinstance(entry, fastgossip.Entry)
    assert all(isinstance(e, fastgossip.Entry) for e in state)
    assert all(isinstance(e, fastgossip.Entry) for e in state.delta({}))


@pytest.mark.parametrize("name", NAMES)
def test_calling_a_public_type_makes_the_live_implementations_message(name: str) -> None:
    msg = getattr(fastgossip, name)(*ARGS[name])
    assert type(msg) is getattr(_codec, name)
    assert msg == getattr(_codec, name)(*ARGS[name])
    assert pickle.loads(pickle.dumps(msg)) == msg
    if name != "Entry":  # an Entry travels inside a GossipBatch only
        assert fastgossip.decode(fastgossip.encode(msg)) == msg


def test_public_types_keep_the_implementations_argument_checks() -> None:
    with pytest.raises(TypeError, match="Argument 'key' has incorrect type"):
        fastgossip.Entry(b"k", 1, 1)
    assert fastgossip.Entry(key="k", value=1, version=2).stamp == 2


def test_message_itself_and_subclasses_are_refused() -> None:
    with pytest.raises(TypeError, match="abstract"):
        fastgossip.Message()

    class Mine(fastgossip.Entry):
        pass

    with pytest.raises(TypeError, match="cannot be subclassed"):
        Mine("k", 1, 1)


async def test_node_entries_are_public_entries(implementation: str) -> None:
    """The case that failed: a node on the twins handed out twin entries,
    which were not ``fastgossip.Entry`` instances under the compiled default."""
    config = fastgossip.NodeConfig.localhost("a", implementation=implementation)
    node = await fastgossip.GossipNode.start(config)
    async with node:
        node.set("k", b"v")
        await wait_for(lambda: node.get("k") == b"v")
        entry = node.get_entry("k")
        assert isinstance(entry, fastgossip.Entry)
        assert entry.key == "k" and entry.value == b"v"
