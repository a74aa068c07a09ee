"""The cluster's pure parts (issue 17): key names, the events codec, the directory's changes,
the URL shown in logs."""

from __future__ import annotations

import json

import pytest

from msrpd.cluster.directory import Directory, DirectoryChanges
from msrpd.cluster.keys import (
    MAX_LISTED,
    BanEvent,
    Keys,
    KilledEvent,
    KillEvent,
    ListedEvent,
    ListEvent,
    decode_event,
    encode_event,
)

NOW = 1_700_000_000.0


def test_key_names() -> None:
    keys = Keys("msrpd:")
    assert keys.nodes == "msrpd:nodes"
    assert keys.events == "msrpd:events"
    assert keys.node("relay-1") == "msrpd:node:relay-1"
    assert keys.session("a1B2c3") == "msrpd:sess:a1B2c3"
    assert keys.usage("relay-1") == "msrpd:usage:relay-1"
    assert keys.fails("[2001:db8::1]") == "msrpd:fails:[2001:db8::1]"
    assert keys.ban("192.0.2.1") == "msrpd:ban:192.0.2.1"
    assert keys.ban_addr("msrpd:ban:[2001:db8::1]") == "[2001:db8::1]"
    assert keys.token("msrpd:sess:a1B2c3") == "a1B2c3"
    with pytest.raises(ValueError, match="not a"):
        keys.ban_addr("other:ban:192.0.2.1")
    with pytest.raises(ValueError, match="not a"):
        keys.token("msrpd:ban:192.0.2.1")


def test_scan_patterns_escape_the_prefixs_glob_characters() -> None:
    assert Keys("msrpd:").ban_pattern() == "msrpd:ban:*"
    assert Keys("c[1]*?:").session_pattern() == "c\\[1\\]\\*\\?:sess:*"


def test_a_ban_event_round_trips() -> None:
    event = BanEvent("relay-1", "[2001:db8::1]", NOW + 300.5)
    raw = encode_event(event)
    assert json.loads(raw) == {
        "kind": "ban",
        "node": "relay-1",
        "addr": "[2001:db8::1]",
        "until": NOW + 300.5,
    }
    assert decode_event(raw) == event
    assert decode_event(raw.encode()) == event
    assert decode_event('{"kind":"ban","node":"n","addr":"a","until":5}') == BanEvent("n", "a", 5.0)


def test_kill_and_killed_events_round_trip() -> None:
    kill = KillEvent("n3", "n1", "a1B2c3", "0f1e2d3c4b5a6978")
    raw = encode_event(kill)
    assert json.loads(raw) == {
        "kind": "kill",
        "node": "n3",
        "target": "n1",
        "sessid": "a1B2c3",
        "id": "0f1e2d3c4b5a6978",
    }
    assert decode_event(raw) == kill
    killed = KilledEvent("n1", "n3", "0f1e2d3c4b5a6978", True, "100000000001", True)
    raw = encode_event(killed)
    assert json.loads(raw) == {
        "kind": "killed",
        "node": "n1",
        "to": "n3",
        "id": "0f1e2d3c4b5a6978",
        "killed": True,
        "conid": "100000000001",
        "closed": True,
    }
    assert decode_event(raw) == killed
    none = KilledEvent("n1", "n3", "r", False, None, None)
    assert decode_event(encode_event(none)) == none


def test_list_and_listed_events_round_trip() -> None:
    ask = ListEvent("n3", "0f1e2d3c4b5a6978")
    assert json.loads(encode_event(ask)) == {"kind": "list", "node": "n3", "id": ask.id}
    assert decode_event(encode_event(ask)) == ask
    rows: list[dict[str, object]] = [{"conid": "a1", "sessions": ["s1"]}, {"conid": "a2"}]
    answer = ListedEvent("n1", "n3", ask.id, rows)
    raw = encode_event(answer)
    assert json.loads(raw) == {
        "kind": "listed",
        "node": "n1",
        "to": "n3",
        "id": ask.id,
        "rows": rows,
    }
    assert decode_event(raw) == answer
    failed = ListedEvent("n1", "n3", ask.id, None, "9000 connections: too many")
    assert json.loads(encode_event(failed))["error"] == "9000 connections: too many"
    assert decode_event(encode_event(failed)) == failed
    # An answer may be far longer than other events, up to MAX_LISTED.
    big = ListedEvent("n1", "n3", "r", [{"peer": "x" * 1000}] * 1000)
    assert 4096 < len(encode_event(big)) <= MAX_LISTED
    assert decode_event(encode_event(big)) == big
    huge = encode_event(ListedEvent("n1", "n3", "r", [{"peer": "x" * 1000}] * 1100))
    with pytest.raises(ValueError, match=f"over {MAX_LISTED} bytes"):
        decode_event(huge)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ('{"kind":"list","node":"n"}', "a list event needs id:"),
        ('{"kind":"list","id":"r"}', "a list event needs node:"),
        ('{"kind":"list","node":"n","id":"' + "r" * 5000 + '"}', "over 4096 bytes"),
        ('{"kind":"listed","node":"n","to":"m","id":"r"}', "rows .a list of objects. or an"),
        ('{"kind":"listed","node":"n","to":"m","id":"r","rows":{}}', "rows"),
        ('{"kind":"listed","node":"n","to":"m","id":"r","rows":[1]}', "rows"),
        ('{"kind":"listed","node":"n","to":"m","id":"r","rows":[],"error":"x"}', "rows"),
        ('{"kind":"listed","node":"n","id":"r","rows":[]}', "a listed event needs to:"),
        ("not json", "Expecting value"),
        ("[]", "unknown event"),
        ('{"kind":"kick","node":"n"}', "unknown event"),
        ('{"kind":"kill","node":"n"}', "a kill event needs target:"),
        ('{"kind":"kill","node":"n","target":"m","id":"r"}', "needs sessid:"),
        ('{"kind":"kill","node":"n","target":"m","sessid":"","id":"r"}', "needs sessid:"),
        ('{"kind":"kill","node":"n","target":"m","sessid":7,"id":"r"}', "needs sessid:"),
        ('{"kind":"kill","node":"n","target":"m","sessid":"' + "s" * 65 + '","id":"r"}', "sessid"),
        ('{"kind":"kill","node":"","target":"m","sessid":"s","id":"r"}', "needs node:"),
        ('{"kind":"kill","node":"n","target":"m","sessid":"s"}', "needs id:"),
        ('{"kind":"kill","node":"n","target":null,"sessid":"s","id":"r"}', "needs target:"),
        ('{"kind":"killed","node":"n","to":"m","id":"r"}', "needs killed"),
        ('{"kind":"killed","node":"n","to":"m","id":"r","killed":1}', "needs killed"),
        ('{"kind":"killed","node":"n","to":"m","id":"r","killed":true,"conid":"XYZ"}', "conid"),
        ('{"kind":"killed","node":"n","to":"m","id":"r","killed":true,"conid":5}', "conid"),
        ('{"kind":"killed","node":"n","to":"m","id":"r","killed":true,"conid":""}', "conid"),
        ('{"kind":"killed","node":"n","to":"m","id":"r","killed":true,"closed":"yes"}', "closed"),
        ('{"kind":"killed","node":"n","id":"r","killed":false}', "needs to:"),
        ('{"node":"n","addr":"a","until":1}', "unknown event"),
        ('{"kind":"ban","addr":"a","until":1}', "needs a node and an addr"),
        ('{"kind":"ban","node":"n","addr":"","until":1}', "needs a node and an addr"),
        ('{"kind":"ban","node":"n","addr":5,"until":1}', "needs a node and an addr"),
        ('{"kind":"ban","node":"n","addr":"a"}', "needs a finite until"),
        ('{"kind":"ban","node":"n","addr":"a","until":"1"}', "needs a finite until"),
        ('{"kind":"ban","node":"n","addr":"a","until":true}', "needs a finite until"),
        ('{"kind":"ban","node":"n","addr":"a","until":NaN}', "needs a finite until"),
        ('{"kind":"ban","node":"n","addr":"a","until":Infinity}', "needs a finite until"),
        ('{"kind":"ban","node":"n","addr":"' + "a" * 5000 + '","until":1}', "over 4096 bytes"),
    ],
)
def test_a_bad_event_is_refused(raw: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        decode_event(raw)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("[" * 4000, "nested too deep"),  # json raises RecursionError: a ValueError here
        (b'{"kind":"\xff"}', "can't decode"),  # bytes that are not UTF-8
        ("\ufffd\ufffd{", "Expecting value"),  # the same, as the agent's client decodes them
    ],
)
def test_an_event_the_parser_cannot_take_is_a_value_error(raw: str | bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        decode_event(raw)


def test_the_directory_writes_what_changed_and_removes_what_ended() -> None:
    directory = Directory()
    first = directory.changes({"a": NOW + 60, "b": NOW + 30}, NOW, full=False)
    assert first == DirectoryChanges({"a": NOW + 60, "b": NOW + 30}, [], 2)
    directory.commit(first)
    assert not directory.changes({"a": NOW + 60, "b": NOW + 30}, NOW, full=False)
    # b re-AUTHed (new expiry), a ended, c is new, d expired before it was ever written.
    cmap = {"b": NOW + 90, "c": NOW + 10, "d": NOW - 1}
    second = directory.changes(cmap, NOW, full=False)
    assert second == DirectoryChanges({"b": NOW + 90, "c": NOW + 10}, ["a"], 2)
    directory.commit(second)
    assert directory.published == {"b": NOW + 90, "c": NOW + 10}
    # c expires (not yet swept from the cmap): removed from the directory.
    third = directory.changes(cmap, NOW + 11, full=False)
    assert third == DirectoryChanges({}, ["c"], 1)


def test_a_write_lost_to_an_outage_is_carried_again() -> None:
    directory = Directory()
    directory.commit(directory.changes({"a": NOW + 60}, NOW, full=False))
    lost = directory.changes({"b": NOW + 60}, NOW, full=False)  # never committed
    assert lost == DirectoryChanges({"b": NOW + 60}, ["a"], 1)
    assert directory.changes({"b": NOW + 60}, NOW, full=False) == lost


def test_after_a_reconnect_everything_is_written_again() -> None:
    directory = Directory()
    directory.commit(directory.changes({"a": NOW + 60, "b": NOW + 60}, NOW, full=False))
    full = directory.changes({"a": NOW + 60, "c": NOW + 5}, NOW, full=True)
    assert full == DirectoryChanges({"a": NOW + 60, "c": NOW + 5}, ["b"], 2)


def test_adopted_entries_of_ended_sessions_are_removed() -> None:
    """An agent that starts finds its node's entries in Redis: those the cmap no longer has
    are removed, the others written again with their expiry."""
    directory = Directory()
    directory.adopt(["a", "gone"])
    changes = directory.changes({"a": NOW + 60}, NOW, full=True)
    assert changes == DirectoryChanges({"a": NOW + 60}, ["gone"], 1)
    directory.commit(changes)
    assert directory.published == {"a": NOW + 60}
