"""cmap_lookup's session-id read (cmapops.fast_session: one regex, remembered per URI) agrees
with the full URI parser wherever it applies (RFC 4975 §9 session-id characters), defers to it
everywhere else, gives the same answer from its memo as from the regex, and keeps the memo
bounded; session_of and session_key agree on real frames."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from msrpd.protocol import LocalProtocolError, parse_uri
from msrpd.routing import cmapops
from msrpd.routing.cmapops import _FAST_SESSION, fast_session, session_key, session_of
from msrpd.shm.cmap import key_of

from .fakeenv import parse

SESSION_CHARS = st.text("ABCxyz019._~+=/-", min_size=1, max_size=24)


@given(
    scheme=st.sampled_from(["msrp", "msrps", "MSRP"]),
    host=st.sampled_from(["127.0.0.1", "relay.example.com", "a-b.c"]),
    port=st.sampled_from(["", ":2855", ":1"]),
    session=SESSION_CHARS,
    transport=st.sampled_from(["tcp", "TCP", "ws"]),
)
def test_fast_read_equals_the_parser(
    scheme: str, host: str, port: str, session: str, transport: str
) -> None:
    uri = f"{scheme}://{host}{port}/{session};{transport}"
    fast = _FAST_SESSION.fullmatch(uri.encode())
    try:
        expected = parse_uri(uri).session
    except LocalProtocolError:
        expected = None
    assert fast is not None
    assert fast[1].decode() == expected
    first, again = fast_session(uri.encode()), fast_session(uri.encode())  # regex, then memo
    assert first == again == session.encode()


def test_other_shapes_take_the_parser() -> None:
    for uri in (
        "msrp://[::1]:2855/s1;tcp",
        "msrp://alice@host:1/s1;tcp",
        "msrp://host:1/s%41;tcp",
        "msrp://host:1;tcp",
    ):
        assert _FAST_SESSION.fullmatch(uri.encode()) is None
        assert fast_session(uri.encode()) is None
        assert uri.encode() not in cmapops._MEMO


def test_the_memo_is_bounded() -> None:
    long = b"msrp://relay.example.com:2855/" + b"s" * 100 + b";tcp"
    assert fast_session(long) == b"s" * 100
    assert long not in cmapops._MEMO  # longer than _MEMO_URI: read, not remembered
    for i in range(cmapops._MEMO_MAX + 10):
        uri = b"msrp://127.0.0.1:2855/s%d;tcp" % i
        assert fast_session(uri) == fast_session(uri) == b"s%d" % i
        assert 0 < len(cmapops._MEMO) <= cmapops._MEMO_MAX


def frame_to(first: str) -> bytes:
    return (
        f"MSRP t1 SEND\r\nTo-Path: {first} msrp://127.0.0.1:40000/bob;tcp\r\n"
        "From-Path: msrp://127.0.0.1:40001/alice;tcp\r\nMessage-ID: m1\r\n"
        "Byte-Range: 1-0/0\r\n\r\n-------t1$\r\n"
    ).encode()


def test_session_of_and_key_on_frames() -> None:
    cases = {
        "msrp://127.0.0.1:2855/Ab-_9;tcp": "Ab-_9",  # the fast shape
        "MSRPS://relay.example.com/x/y+z=;TLS": "x/y+z=",
        "msrp://[::1]:2855/s6;tcp": "s6",  # IPv6: the parser
        "msrp://u@127.0.0.1:2855/su;tcp": "su",  # userinfo: the parser
        "msrp://127.0.0.1:2855;tcp": "",  # no session id
    }
    for _ in range(2):  # the second time from the memo
        for uri, sessid in cases.items():
            frame = parse(frame_to(uri))
            assert session_of(frame) == sessid, uri
            assert session_key(frame) == key_of(sessid), uri
