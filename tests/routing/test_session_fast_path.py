"""cmap_lookup's session-id read without a regex (cmapops.fast_session) accepts exactly the
shape `msrp[s]://host[:port]/session;transport` in plain characters, reads the same session id
as the full URI parser there (RFC 4975 §9 session-id characters), and defers to the parser
everywhere else; session_of and session_key agree with it on real frames."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from msrpd.protocol import LocalProtocolError, parse_uri
from msrpd.routing.cmapops import fast_session, session_key, session_of
from msrpd.shm.cmap import key_of

from .fakeenv import parse

SESSION_CHARS = st.text("ABCxyz019._~+=/-", min_size=1, max_size=24)

# The shape fast_session reads, as the regex the lookup used before it: the specification.
SHAPE = re.compile(rb"(?i:msrps?)://[A-Za-z0-9.-]+(?::[0-9]{1,5})?/([A-Za-z0-9._~+=/-]+);[A-Za-z]+")


def spec(uri: bytes) -> bytes | None:
    match = SHAPE.fullmatch(uri)
    return None if match is None else match[1]


@given(
    scheme=st.sampled_from(["msrp", "msrps", "MSRP", "mSrPs"]),
    host=st.sampled_from(["127.0.0.1", "relay.example.com", "a-b.c"]),
    port=st.sampled_from(["", ":2855", ":1", ":65535"]),
    session=SESSION_CHARS,
    transport=st.sampled_from(["tcp", "TCP", "ws"]),
)
def test_fast_read_equals_the_parser(
    scheme: str, host: str, port: str, session: str, transport: str
) -> None:
    uri = f"{scheme}://{host}{port}/{session};{transport}"
    try:
        expected = parse_uri(uri).session
    except LocalProtocolError:
        expected = None
    fast = fast_session(uri.encode())
    assert fast is not None
    assert fast.decode() == expected == session


# Pieces that make near misses: every delimiter, characters each part refuses, non-ASCII,
# empty parts, doubled delimiters.
_NEAR = "msrp msrps MSRP msrpx s :// :/ / ; : @ [ ] 127.0.0.1 h a-b.c 2855 123456 0 sess a/b"
PIECES = st.sampled_from(
    [*_NEAR.split(), "x+y=z", "~_.-", "%41", "tcp", "TCP", "ws", "t1", "é", "?", "#", " ", "\t", "\x00", ""]
)


@given(st.lists(PIECES, max_size=10))
@example(["msrp", "://", "h", ":", "/", "s", ";", "tcp"])  # empty port
@example(["msrp", "://", ":", "1", "/", "s", ";", "tcp"])  # empty host
@example(["msrp", "://", "h", ":", "123456", "/", "s", ";", "tcp"])  # six-digit port
@example(["msrp", "://", "h", "/", ";", "tcp"])  # empty session
@example(["msrp", "://", "h", "/", "s", ";"])  # empty transport
@example(["msrp", "://", "h", "/", "s", ";", "tcp", ";", "tcp"])  # a parameter
@example(["msrps", "://", "h", ":", "1", ":", "2", "/", "s", ";", "tcp"])  # two colons
@example(["msrp", "s", "://", "h", "/", "a/b", ";", "ws"])  # "/" inside the session
def test_fast_read_accepts_exactly_the_shape(pieces: list[str]) -> None:
    uri = "".join(pieces).encode("utf-8")
    assert fast_session(uri) == spec(uri)


@given(st.binary(max_size=40))
def test_fast_read_on_any_bytes(uri: bytes) -> None:
    assert fast_session(uri) == spec(uri)
    assert fast_session(b"msrp://h:1/" + uri) == spec(b"msrp://h:1/" + uri)


def test_other_shapes_take_the_parser() -> None:
    for uri in (
        b"msrp://[::1]:2855/s1;tcp",
        b"msrp://alice@host:1/s1;tcp",
        b"msrp://host:1/s%41;tcp",
        b"msrp://host:1;tcp",
        b"msrp://host:1/s1;tcp;x=1",
        b"msrpx://host:1/s1;tcp",
        b"msrp:/host:1/s1;tcp",
    ):
        assert fast_session(uri) is None


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
    for uri, sessid in cases.items():
        frame = parse(frame_to(uri))
        assert session_of(frame) == sessid, uri
        assert session_key(frame) == key_of(sessid), uri
