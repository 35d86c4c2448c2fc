"""The membership parts of the wire (docs/PROTOCOL.md, "Membership"): the
greeting's tag and frames, the record's format, the reserved keys."""

from __future__ import annotations

import json
from types import ModuleType

import pytest

from fastgossip.core import ANSWER_BIT, GREETING_BIT, cluster_tag
from fastgossip.membership import MAX_RECORD_BYTES, MEMBER_PREFIX, Membership, MembershipConfig


def test_cluster_tags_match_the_protocol_document() -> None:
    assert cluster_tag(None) == cluster_tag("") == 0xD0AF1F1EF682BE6B
    assert cluster_tag("blue") == 0xFE627B02EE43E23B
    assert all(cluster_tag(c) & GREETING_BIT for c in (None, "x", "prod", "é"))
    assert cluster_tag("blue") != cluster_tag("green")


def test_greeting_frames_match_the_protocol_document(codec: ModuleType) -> None:
    ping = codec.encode(codec.Ping("a", cluster_tag("blue")))
    assert ping.hex() == "0000000d0102000161fe627b02ee43e23b"
    pong = codec.encode(codec.Pong("b", cluster_tag(None) ^ ANSWER_BIT))
    assert pong.hex() == "0000000d010300016290af1f1ef682be6b"


class _FakeCore:
    node_id = "n1"
    origin = "n1#abc"

    class limits:  # noqa: N801 (a stand-in for CoreLimits)
        gossip_interval = 0.2

    def __init__(self) -> None:
        self.written: list = []

    def _set_reserved(self, key: str, value: bytes, now: float, news: bool = False) -> None:
        self.written.append((key, value, news))


def test_a_record_is_compact_json_with_address_status_and_meta() -> None:
    core = _FakeCore()
    m = Membership(core, MembershipConfig(addr=("::1", 7946), meta={"role": "db"}), lambda ev: None)
    m.beat(1.0)
    key, value, _ = core.written[-1]
    assert key == MEMBER_PREFIX + "n1"
    assert json.loads(value) == {"a": "[::1]:7946", "s": "alive", "p": 0.5, "m": {"role": "db"}}
    assert value == b'{"a":"[::1]:7946","m":{"role":"db"},"p":0.5,"s":"alive"}'
    m.leave(2.0)
    assert json.loads(core.written[-1][1])["s"] == "left" and core.written[-1][2]
    with pytest.raises(ValueError):
        m.set_meta("big", "x" * MAX_RECORD_BYTES, 3.0)
    with pytest.raises(TypeError):
        m.set_meta("n", 1, 3.0)  # type: ignore[arg-type]
