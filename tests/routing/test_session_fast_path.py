"""cmap_lookup's one-regex session-id read agrees with the full URI parser wherever it
applies (RFC 4975 §9 session-id characters), and defers to it everywhere else."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from msrpd.protocol import LocalProtocolError, parse_uri
from msrpd.routing.cmapops import _FAST_SESSION

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


def test_other_shapes_take_the_parser() -> None:
    for uri in (
        "msrp://[::1]:2855/s1;tcp",
        "msrp://alice@host:1/s1;tcp",
        "msrp://host:1/s%41;tcp",
        "msrp://host:1;tcp",
    ):
        assert _FAST_SESSION.fullmatch(uri.encode()) is None
