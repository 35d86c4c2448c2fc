"""Capturing applied entries by key prefix (what membership and watchers read):
both twins keep exactly the entries that changed the table, in order."""

from __future__ import annotations

from types import ModuleType

import pytest

from tests.test_table import batch_frame


def test_nothing_is_kept_without_a_prefix(table: ModuleType) -> None:
    s = table.GossipState()
    s.set("\x00m:a", b"x", 1, "a#1")
    assert s.take_captured() == []


def test_set_and_merges_that_change_the_table_are_kept_in_order(table: ModuleType) -> None:
    s = table.GossipState()
    s.set_capture(["\x00m:", "svc/"])
    s.set("\x00m:a", b"one", 5, "a#1")
    s.set("other", b"no", 6, "a#1")  # no prefix: not kept
    s.set("\x00m:a", b"old", 4, "b#1")  # loses: not kept
    s.set("svc/x", 7, 7, "b#1")
    got = s.take_captured()
    assert [(e.key, e.value, e.version, e.origin) for e in got] == [
        ("\x00m:a", b"one", 5, "a#1"),
        ("svc/x", 7, 7, "b#1"),
    ]
    assert s.take_captured() == []  # taken


def test_merge_frame_keeps_only_winners_with_the_prefix(table: ModuleType) -> None:
    s = table.GossipState()
    s.set_capture(["\x00"])
    s.set("\x00h", b"v", 10, "a#1")
    s.take_captured()
    frame = batch_frame(
        "p",
        [
            ("\x00h", b"older", 9, "b#1", 9),
            ("\x00k", b"new", 3, "b#1", 3),
            ("plain", b"p", 3, "b#1", 4),
        ],
    )
    assert s.merge_frame(frame) == 2
    assert [(e.key, e.value) for e in s.take_captured()] == [("\x00k", b"new")]


def test_utf8_prefixes_and_clearing(table: ModuleType) -> None:
    s = table.GossipState()
    s.set_capture(["é/"])
    s.set("é/1", 1, 1, "o")
    s.set("e/1", 1, 1, "o")
    assert [e.key for e in s.take_captured()] == ["é/1"]
    s.set("é/2", 1, 1, "o")
    s.set_capture([])  # stops, and drops what was kept
    s.set("é/3", 1, 1, "o")
    assert s.take_captured() == []
    with pytest.raises(TypeError):
        s.set_capture([b"bytes"])
