"""Tests for msrpd.protocol.uri: RFC 4975 §6/§9 syntax, §6.1 equivalence, Kamailio differences."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from msrpd.protocol.errors import LocalProtocolError
from msrpd.protocol.status import Status
from msrpd.protocol.uri import (
    MSRP_DEFAULT_PORT,
    MSRPURI_KEYS,
    MsrpUri,
    parse_uri,
    split_path,
)

# The verified table of kamailio-msrp.md §5.2: (scheme, user, userinfo, host, port, session,
# proto, params).
KAMAILIO_TABLE = [
    (
        "msrp://host.example.com:2855/sess123;tcp",
        ("msrp", "", "", "host.example.com", 2855, "sess123", "tcp", ""),
    ),
    (
        "msrps://alice@host.example.com:2855/sess;tcp",
        ("msrps", "alice", "alice", "host.example.com", 2855, "sess", "tcp", ""),
    ),
    (
        "MSRP://user:pw@h:1/s;tcp;foo=bar",
        ("MSRP", "user", "user:pw", "h", 1, "s", "tcp", "tcp;foo=bar"),
    ),
    ("msrp://h:1;tcp", ("msrp", "", "", "h", 1, "", "tcp", "")),
    ("msrp://h/s;tcp", ("msrp", "", "", "h", None, "s", "tcp", "")),
    ("msrp://h:1/s", ("msrp", "", "", "h", 1, "s", "", "")),
    ("msrp://[::1]:2855/s;tcp", ("msrp", "", "", "[::1]", 2855, "s", "tcp", "")),
]


def fields(uri: MsrpUri) -> tuple[object, ...]:
    return (
        uri.scheme,
        uri.user,
        uri.userinfo,
        uri.host,
        uri.port,
        uri.session,
        uri.proto,
        uri.params,
    )


@pytest.mark.parametrize(("text", "expected"), KAMAILIO_TABLE)
def test_kamailio_table_fields(text: str, expected: tuple[object, ...]) -> None:
    uri = parse_uri(text)
    assert fields(uri) == expected
    assert uri.raw == text


@pytest.mark.parametrize(("text", "expected"), KAMAILIO_TABLE)
def test_kamailio_table_keys(text: str, expected: tuple[object, ...]) -> None:
    uri = parse_uri(text)
    by_name = dict(
        zip(
            ("scheme", "user", "userinfo", "host", "port", "session", "proto", "params"),
            expected,
            strict=True,
        )
    )
    for name in MSRPURI_KEYS:
        want = by_name[name]
        assert uri.key(name) == ("" if want is None else str(want))


@pytest.mark.parametrize(("text", "expected"), KAMAILIO_TABLE)
def test_kamailio_table_bytes_input(text: str, expected: tuple[object, ...]) -> None:
    assert fields(parse_uri(text.encode())) == expected


def test_keys_constant() -> None:
    assert MSRPURI_KEYS == (
        "scheme",
        "user",
        "userinfo",
        "host",
        "port",
        "session",
        "proto",
        "params",
    )
    assert MSRP_DEFAULT_PORT == 2855


def test_key_name_is_case_insensitive() -> None:
    uri = parse_uri("msrp://alice@h:7/s;tcp")
    assert uri.key("HOST") == "h"
    assert uri.key("Port") == "7"
    assert uri.key("USER") == "alice"


@pytest.mark.parametrize("name", ["", "hostname", "path", "transport", "\u017fcheme"])
def test_key_unknown_name(name: str) -> None:
    with pytest.raises(KeyError):
        parse_uri("msrp://h:1/s;tcp").key(name)


def test_secure() -> None:
    assert parse_uri("msrps://h:1/s;tcp").secure
    assert parse_uri("MSRPS://h:1/s;tcp").secure
    assert not parse_uri("msrp://h:1/s;tcp").secure


# --- where msrpd deliberately differs from Kamailio's msrp_parse_uri -------------------------


def test_at_sign_in_params_is_text() -> None:
    # Kamailio: an '@' anywhere restarts host parsing after it, so this gives host "b" with no
    # port or session.
    uri = parse_uri("msrp://h:1/s;tcp;x=a@b")
    assert fields(uri) == ("msrp", "", "", "h", 1, "s", "tcp", "tcp;x=a@b")


def test_at_sign_in_params_without_session_is_text() -> None:
    # Kamailio: same host-from-after-the-'@' reparse; with no '/', the '@' still is in params.
    uri = parse_uri("msrp://h:1;tcp;x=a@b")
    assert (uri.host, uri.port, uri.userinfo, uri.params) == ("h", 1, "", "tcp;x=a@b")


def test_wss_transport() -> None:
    # Kamailio: any text of 3+ bytes starting with "ws" gives proto "ws", params "wss".
    uri = parse_uri("msrp://h:1/s;wss")
    assert (uri.proto, uri.params) == ("wss", "")


def test_ipv6_without_port() -> None:
    # Kamailio: an IPv6 host without a port does not parse at all.
    uri = parse_uri("msrp://[::1]/s;tcp")
    assert (uri.host, uri.port) == ("[::1]", None)
    assert uri.address() == ("::1", 2855)


def test_params_for_non_tcp_transport() -> None:
    # Kamailio: only tcp/ws* keep the transport in params; ";tls;x=1" gives params "x=1".
    uri = parse_uri("msrp://h:1/s;tls;x=1")
    assert (uri.proto, uri.params) == ("tls", "tls;x=1")


def test_params_for_ws_transport() -> None:
    # Kamailio agrees here (ws keeps the whole text), listed for contrast with ;wss and ;tls.
    uri = parse_uri("msrp://h:1/s;ws;x=1")
    assert (uri.proto, uri.params) == ("ws", "ws;x=1")


def test_semicolon_in_userinfo_is_rejected() -> None:
    # Kamailio: parses it but sets neither user nor userinfo. msrpd: the authority ends at the
    # first ';', so this is a 400 rather than a URI with a silently missing user.
    with pytest.raises(LocalProtocolError):
        parse_uri("msrp://u;p=1@h:1/s;tcp")


def test_user_is_userinfo_cut_at_colon() -> None:
    # Kamailio cuts user at ';' first, then ':'; msrpd only ever cuts at the first ':'.
    uri = parse_uri("msrp://a:b:c@h:1/s;tcp")
    assert (uri.user, uri.userinfo) == ("a", "a:b:c")


def test_absent_port_connects_to_2855() -> None:
    # Kamailio: an absent port goes through the SIP resolver (SRV, then 5060 / 5061).
    assert parse_uri("msrp://127.0.0.1/x;tcp").address() == ("127.0.0.1", 2855)
    assert parse_uri("msrps://127.0.0.1/x;tcp").address() == ("127.0.0.1", 2855)


def test_outer_whitespace_is_stripped() -> None:
    # Kamailio: only the last component is trimmed; msrpd strips both ends, rejects the inside.
    uri = parse_uri(" \tmsrp://h:1/s;tcp\r\n")
    assert uri.raw == "msrp://h:1/s;tcp"
    assert uri.proto == "tcp"


# --- invalid input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "msrp",
        "msrp://",
        "msrp:/h:1/s;tcp",
        "msrp:h:1/s;tcp",
        "sip://h:1/s;tcp",
        "msrpx://h:1/s;tcp",
        "http://h:1/s;tcp",
        "msrp://:1/s;tcp",
        "msrp://@:1/s;tcp",
        "msrp:///s;tcp",
        "msrp://h:0/s;tcp",
        "msrp://h:00000/s;tcp",
        "msrp://h:70000/s;tcp",
        "msrp://h:65536/s;tcp",
        "msrp://h:123456/s;tcp",
        "msrp://h:",
        "msrp://h:/s;tcp",
        "msrp://h:x/s;tcp",
        "msrp://h:-1/s;tcp",
        "msrp://[::1:2855/s;tcp",
        "msrp://[::1",
        "msrp://::1/s;tcp",
        "msrp://[1.2.3.4]:1/s;tcp",
        "msrp://[example.com]:1/s;tcp",
        "msrp://[]:1/s;tcp",
        "msrp://[:::1]:1/s;tcp",
        "msrp://[v1.x]:1/s;tcp",
        "msrp://[fe80::1%25eth0]:1/s;tcp",
        "msrp://h :1/s;tcp",
        "msrp://h:1/s ;tcp",
        "msrp://h:1/s;\ttcp",
        "msrp://h:1/s;tcp; x=1",
        "msrp://h:1/s\r\n;tcp",
        "msrp://h:1/s\x00;tcp",
        "msrp://h\x7f:1/s;tcp",
        "msrp://h\u00e9:1/s;tcp",
        "msrp://h:1/;tcp",
        "msrp://h:1/",
        "msrp://h:1/s;",
        "msrp://h:1/s;tcp;",
        "msrp://h:1/s;tcp;;x",
        "msrp://h:1/s;tcp;=x",
        "msrp://h:1/s;t-cp",
        "msrp://h:1/s;foo=bar",
        "msrp://h:1/s%41;tcp",
        "msrp://h:1/s@x;tcp",
        "msrp://a@b@h:1/s;tcp",
        "msrp://h%zz:1/s;tcp",
        "msrp://h%4:1/s;tcp",
        "msrp://u%x@h:1/s;tcp",
    ],
)
def test_invalid(text: str) -> None:
    with pytest.raises(LocalProtocolError) as info:
        parse_uri(text)
    assert info.value.status == Status.UNINTELLIGIBLE


@pytest.mark.parametrize("data", [b"msrp://h\xff:1/s;tcp", b"\xc3(", b"msrp://h:1/s;tcp\x80"])
def test_invalid_utf8(data: bytes) -> None:
    with pytest.raises(LocalProtocolError) as info:
        parse_uri(data)
    assert info.value.status == Status.UNINTELLIGIBLE


def test_error_message_is_bounded() -> None:
    with pytest.raises(LocalProtocolError) as info:
        parse_uri("msrp://h:1/" + "x" * 10_000 + " ;tcp")
    assert len(info.value.message) < 200


# --- valid corners ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "session"),
    [
        ("msrp://h:1/a/b/c;tcp", "a/b/c"),
        ("msrp://h:1//;tcp", "/"),
        ("msrp://h:1///a/;tcp", "//a/"),
        ("msrp://h:1/a+b=;tcp", "a+b="),
        ("msrp://h:1/iau39soe2843z;tcp", "iau39soe2843z"),
        ("msrp://h:1/A-._~z;tcp", "A-._~z"),
        ("msrp://h:1/CaSe;tcp", "CaSe"),
    ],
)
def test_session_ids(text: str, session: str) -> None:
    uri = parse_uri(text)
    assert uri.session == session
    assert (uri.host, uri.port, uri.proto) == ("h", 1, "tcp")


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("msrp://192.0.2.1:1/s;tcp", "192.0.2.1"),
        ("msrp://[2001:db8::1]:1/s;tcp", "[2001:db8::1]"),
        ("msrp://[::ffff:192.0.2.1]:1/s;tcp", "[::ffff:192.0.2.1]"),
        ("msrp://Relay.Example.COM:1/s;tcp", "Relay.Example.COM"),
        ("msrp://a_b~c!$&'()*+,=:1/s;tcp", "a_b~c!$&'()*+,="),
        ("msrp://%41bc:1/s;tcp", "%41bc"),
        ("msrp://999.1.1.1:1/s;tcp", "999.1.1.1"),
    ],
)
def test_hosts(text: str, host: str) -> None:
    assert parse_uri(text).host == host


def test_port_bounds_and_leading_zeros() -> None:
    assert parse_uri("msrp://h:1;tcp").port == 1
    assert parse_uri("msrp://h:65535;tcp").port == 65535
    assert parse_uri("msrp://h:02855;tcp").port == 2855


def test_empty_userinfo() -> None:
    uri = parse_uri("msrp://@h:1/s;tcp")
    assert (uri.userinfo, uri.user, uri.host) == ("", "", "h")


def test_minimal_uri() -> None:
    uri = parse_uri("msrp://h")
    assert fields(uri) == ("msrp", "", "", "h", None, "", "", "")


def test_unknown_transport_and_params() -> None:
    uri = parse_uri("msrp://h:1/s;SCTP;a;b=c=d;e=;f/g=h@i")
    assert uri.proto == "SCTP"
    assert uri.params == "SCTP;a;b=c=d;e=;f/g=h@i"


def test_transport_kept_as_written() -> None:
    assert parse_uri("msrp://h:1/s;TCP").proto == "TCP"


def test_userinfo_with_percent_and_sub_delims() -> None:
    uri = parse_uri("msrps://al%20ice!x:pw@h:1/s;tcp")
    assert (uri.user, uri.userinfo) == ("al%20ice!x", "al%20ice!x:pw")


def test_uri_is_frozen_and_hashable() -> None:
    uri = parse_uri("msrp://h:1/s;tcp")
    with pytest.raises(AttributeError):
        uri.host = "x"  # type: ignore[misc]
    assert {uri: 1}[parse_uri("msrp://h:1/s;tcp")] == 1


# --- address() -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("msrp://h/s;tcp", ("h", 2855)),
        ("msrp://h:9/s;tcp", ("h", 9)),
        ("msrps://alice@relay.example.com;tcp", ("relay.example.com", 2855)),
        ("msrp://[2001:db8::1]:2855/s;tcp", ("2001:db8::1", 2855)),
        ("msrp://[2001:db8::1]/s;tcp", ("2001:db8::1", 2855)),
        ("msrp://192.0.2.1:12/s;tcp", ("192.0.2.1", 12)),
    ],
)
def test_address(text: str, address: tuple[str, int]) -> None:
    assert parse_uri(text).address() == address


# --- same_as(): RFC 4975 §6.1 ----------------------------------------------------------------


def same(a: str, b: str) -> bool:
    left, right = parse_uri(a), parse_uri(b)
    assert left.same_as(right) == right.same_as(left)
    return left.same_as(right)


def test_same_as_identical() -> None:
    assert same("msrp://h:1/s;tcp", "msrp://h:1/s;tcp")


def test_same_as_scheme_case_insensitive() -> None:
    assert same("MSRP://h:1/s;tcp", "msrp://h:1/s;tcp")
    assert not same("msrps://h:1/s;tcp", "msrp://h:1/s;tcp")


def test_same_as_host_case_insensitive() -> None:
    assert same("msrp://Relay.EXAMPLE.com:1/s;tcp", "msrp://relay.example.com:1/s;tcp")
    assert not same("msrp://relay1.example.com:1/s;tcp", "msrp://relay2.example.com:1/s;tcp")


def test_same_as_ipv6_by_value() -> None:
    assert same("msrp://[2001:db8::1]:1/s;tcp", "msrp://[2001:0db8:0:0:0:0:0:1]:1/s;tcp")
    assert same("msrp://[2001:DB8::1]:1/s;tcp", "msrp://[2001:db8::1]:1/s;tcp")
    assert not same("msrp://[2001:db8::1]:1/s;tcp", "msrp://[2001:db8::2]:1/s;tcp")


def test_same_as_ipv4_by_value() -> None:
    assert same("msrp://192.0.2.1:1/s;tcp", "msrp://192.0.2.1:1/s;tcp")
    assert not same("msrp://192.0.2.1:1/s;tcp", "msrp://192.0.2.2:1/s;tcp")
    # Different address families never match, even for an IPv4-mapped IPv6 address.
    assert not same("msrp://192.0.2.1:1/s;tcp", "msrp://[::ffff:192.0.2.1]:1/s;tcp")


def test_same_as_ip_never_equals_name() -> None:
    assert not same("msrp://127.0.0.1:1/s;tcp", "msrp://localhost:1/s;tcp")


def test_same_as_percent_encoded_unreserved_decoded() -> None:
    assert same("msrp://%72elay.example.com:1/s;tcp", "msrp://relay.example.com:1/s;tcp")
    assert same("msrp://%52elay.example.com:1/s;tcp", "msrp://relay.example.com:1/s;tcp")
    assert same("msrp://a%2ab:1/s;tcp", "msrp://a%2Ab:1/s;tcp")
    assert not same("msrp://a%2ab:1/s;tcp", "msrp://a*b:1/s;tcp")
    assert same("msrp://%31%39%32.0.2.1:1/s;tcp", "msrp://192.0.2.1:1/s;tcp")


def test_same_as_userinfo_ignored() -> None:
    assert same("msrp://alice@h:1/s;tcp", "msrp://bob:x@h:1/s;tcp")
    assert same("msrp://alice@h:1/s;tcp", "msrp://h:1/s;tcp")


def test_same_as_port() -> None:
    assert same("msrp://h:2855/s;tcp", "msrp://h:02855/s;tcp")
    assert not same("msrp://h:2855/s;tcp", "msrp://h:2856/s;tcp")
    # An explicit port never equals an absent one, even the default port.
    assert not same("msrp://h:2855/s;tcp", "msrp://h/s;tcp")
    assert same("msrp://h/s;tcp", "msrp://h/s;tcp")


def test_same_as_session_case_sensitive() -> None:
    assert not same("msrp://h:1/abc;tcp", "msrp://h:1/ABC;tcp")
    assert not same("msrp://h:1/abc;tcp", "msrp://h:1/abcd;tcp")


def test_same_as_session_absent_vs_present() -> None:
    assert not same("msrp://h:1;tcp", "msrp://h:1/s;tcp")
    assert same("msrp://h:1;tcp", "msrp://h:1;tcp")


def test_same_as_no_path_normalisation() -> None:
    assert not same("msrp://h:1/a/b;tcp", "msrp://h:1/a//b;tcp")


def test_same_as_transport() -> None:
    assert same("msrp://h:1/s;TCP", "msrp://h:1/s;tcp")
    assert not same("msrp://h:1/s;tcp", "msrp://h:1/s;ws")
    assert not same("msrp://h:1/s;tcp", "msrp://h:1/s")


def test_same_as_other_params_ignored() -> None:
    assert same("msrp://h:1/s;tcp;x=1", "msrp://h:1/s;tcp")


# --- split_path() ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("msrp://a:1/s;tcp", ["msrp://a:1/s;tcp"]),
        ("msrp://a:1/s;tcp msrp://b:2/t;tcp", ["msrp://a:1/s;tcp", "msrp://b:2/t;tcp"]),
        ("msrp://a:1/s;tcp  msrp://b:2/t;tcp", ["msrp://a:1/s;tcp", "msrp://b:2/t;tcp"]),
        ("msrp://a:1/s;tcp\tmsrp://b:2/t;tcp", ["msrp://a:1/s;tcp", "msrp://b:2/t;tcp"]),
        (
            " \tmsrp://a:1;tcp \t msrp://b:2;tcp\t msrp://c:3;tcp ",
            ["msrp://a:1;tcp", "msrp://b:2;tcp", "msrp://c:3;tcp"],
        ),
        (b"msrp://a:1;tcp msrp://b:2;tcp", ["msrp://a:1;tcp", "msrp://b:2;tcp"]),
        ("", []),
        (" \t ", []),
    ],
)
def test_split_path(value: str | bytes, expected: list[str]) -> None:
    assert split_path(value) == expected


def test_split_path_only_on_sp_and_htab() -> None:
    # Other whitespace is left in the element, so parse_uri rejects it later.
    assert split_path("msrp://a:1;tcp\nmsrp://b:2;tcp") == ["msrp://a:1;tcp\nmsrp://b:2;tcp"]
    with pytest.raises(LocalProtocolError):
        parse_uri("msrp://a:1;tcp\nmsrp://b:2;tcp")


def test_split_path_bad_utf8() -> None:
    with pytest.raises(LocalProtocolError):
        split_path(b"msrp://a:1;tcp \xff")


# --- properties ------------------------------------------------------------------------------


def parse_or_none(text: str | bytes) -> MsrpUri | None:
    try:
        return parse_uri(text)
    except LocalProtocolError:
        return None


@given(st.text())
def test_arbitrary_text_parses_or_raises_protocol_error(text: str) -> None:
    uri = parse_or_none(text)
    if uri is not None:
        assert uri.key("host") == uri.host


@given(st.binary())
def test_arbitrary_bytes_parses_or_raises_protocol_error(data: bytes) -> None:
    parse_or_none(data)


_URI_ALPHABET = "msrpMSRP:/@;[]=.%+-_~!$&'()*,0123456789abcdefABCDEF \t"


@given(st.text(alphabet=_URI_ALPHABET, max_size=40))
def test_near_uri_text_parses_or_raises_protocol_error(tail: str) -> None:
    for scheme in ("msrp://", "msrps://", "msrp://[", "msrp://h:"):
        uri = parse_or_none(scheme + tail)
        if uri is not None:
            uri.address()
            assert uri.same_as(uri)
            assert parse_uri(uri.raw) == uri


_label = st.from_regex(r"[a-z0-9][a-z0-9\-]{0,10}", fullmatch=True)
_session = st.from_regex(r"[A-Za-z0-9\-._~+=/]{1,20}", fullmatch=True)


@given(
    host=st.lists(_label, min_size=1, max_size=3).map(".".join),
    port=st.one_of(st.none(), st.integers(1, 65535)),
    session=st.one_of(st.just(""), _session),
    proto=st.sampled_from(["", "tcp", "tls", "ws", "wss"]),
    userinfo=st.one_of(st.just(""), st.from_regex(r"[a-z]{1,8}(:[a-z0-9]{1,8})?", fullmatch=True)),
)
def test_round_trip_of_built_uris(
    host: str, port: int | None, session: str, proto: str, userinfo: str
) -> None:
    text = "msrp://" + (f"{userinfo}@" if userinfo else "") + host
    text += f":{port}" if port is not None else ""
    text += f"/{session}" if session else ""
    text += f";{proto}" if proto else ""
    uri = parse_uri(text)
    assert (uri.userinfo, uri.host, uri.port, uri.session, uri.proto, uri.params) == (
        userinfo,
        host,
        port,
        session,
        proto,
        "",
    )
    assert uri.user == userinfo.partition(":")[0]
