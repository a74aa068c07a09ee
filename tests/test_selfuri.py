"""SelfUris (msrpd/selfuri.py): which MSRP URIs name this relay (issue 12, item 9;
rfc-checklist §2.2, RFC 4975 §6.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from msrpd.config import load_config
from msrpd.config.address import parse_listen
from msrpd.config.selfuri import SelfUris
from msrpd.protocol import parse_uri


def _uris(
    listen: list[str],
    use_path_addr: str | None = None,
    aliases: tuple[str, ...] = (),
    local_hosts: tuple[str, ...] = (),
) -> SelfUris:
    return SelfUris.build([parse_listen(t) for t in listen], use_path_addr, aliases, local_hosts)


def _ours(uris: SelfUris, text: str) -> bool:
    return uris.matches(parse_uri(text))


@pytest.mark.parametrize(
    ("uri", "ours"),
    [
        ("msrp://127.0.0.1:2856/sid;tcp", True),
        ("msrp://127.0.0.1:2856;tcp", True),  # the bare relay URI (AUTH)
        ("MSRP://127.0.0.1:2856/sid;TCP", True),  # scheme and transport: any case
        ("msrp://127.0.0.1:2856/sid", True),  # no transport: still reaches us over TCP
        ("msrp://alice@127.0.0.1:2856/sid;tcp", True),  # userinfo is ignored
        ("msrp://127.0.0.1:2857/sid;tcp", False),  # another port
        ("msrp://127.0.0.2:2856/sid;tcp", False),  # another host
        ("msrps://127.0.0.1:2856/sid;tcp", False),  # that port is not TLS
        ("msrp://127.0.0.1:2856/sid;ws", False),  # a transport we do not serve
        ("msrp://127.0.0.1/sid;tcp", False),  # no port means 2855, which we do not listen on
        ("msrps://[2001:db8::1]:2855/sid;tcp", True),
        ("msrps://[2001:0DB8:0:0:0:0:0:1]:2855/sid;tcp", True),  # same address, by value
        ("msrps://[2001:db8::1]/sid;tcp", True),  # no port: 2855
        ("msrps://[2001:db8::2]:2855/sid;tcp", False),
        ("msrp://[2001:db8::1]:2855/sid;tcp", False),  # the IPv6 listener is TLS only
    ],
)
def test_listen_addresses_scheme_host_port_transport(uri: str, ours: bool) -> None:
    uris = _uris(["tcp:127.0.0.1:2856", "tls:[2001:db8::1]:2855"])
    assert _ours(uris, uri) is ours


def test_use_path_addr_with_and_without_scheme_counts_for_every_scheme_served() -> None:
    listen = ["tcp:127.0.0.1:2856", "tls:127.0.0.1:2857"]
    for addr in ("Relay.Example.COM:9000", "msrp://relay.example.com:9000"):
        uris = _uris(listen, addr)
        assert _ours(uris, "msrp://relay.example.com:9000/s;tcp")
        assert _ours(uris, "msrps://RELAY.example.com:9000/s;tcp")  # the scheme is the AUTH's
        assert not _ours(uris, "msrp://relay.example.com:9001/s;tcp")
        assert not _ours(uris, "msrp://other.example.com:9000/s;tcp")


def test_use_path_addr_without_port_counts_on_every_listen_port_and_2855() -> None:
    uris = _uris(["tcp:127.0.0.1:2856", "tcp:127.0.0.1:2858"], "relay.example.com")
    assert _ours(uris, "msrp://relay.example.com/s;tcp")  # our Use-Path: no port (2855)
    assert _ours(uris, "msrp://relay.example.com:2856/s;tcp")
    assert _ours(uris, "msrp://relay.example.com:2858/s;tcp")
    assert not _ours(uris, "msrp://relay.example.com:2857/s;tcp")
    assert not _ours(uris, "msrp://127.0.0.1/s;tcp")  # a listen address has its own port


def test_aliases_with_a_scheme_count_for_that_scheme_only() -> None:
    listen = ["tcp:127.0.0.1:2856", "tls:127.0.0.1:2857"]
    uris = _uris(listen, None, ("msrps://edge.example.net:443", "[::1]:7000", "lb.example.org"))
    assert _ours(uris, "msrps://edge.example.net:443/s;tcp")
    assert not _ours(uris, "msrp://edge.example.net:443/s;tcp")
    assert _ours(uris, "msrp://[0:0:0:0:0:0:0:1]:7000/s;tcp")
    assert _ours(uris, "msrps://[::1]:7000/s;tcp")
    assert _ours(uris, "msrp://LB.example.org:2856/s;tcp")
    assert _ours(uris, "msrps://lb.example.org:2857/s;tcp")
    assert not _ours(uris, "msrp://lb.example.org:2858/s;tcp")


def test_a_wildcard_listen_address_stands_for_the_local_addresses() -> None:
    uris = _uris(["tcp:0.0.0.0:2855"], local_hosts=("127.0.0.1", "192.0.2.7", "fe80::1"))
    assert _ours(uris, "msrp://192.0.2.7:2855/s;tcp")
    assert _ours(uris, "msrp://127.0.0.1/s;tcp")
    assert _ours(uris, "msrp://[fe80::1]:2855/s;tcp")
    assert not _ours(uris, "msrp://192.0.2.8:2855/s;tcp")


def test_count_skips_uris_that_do_not_parse() -> None:
    uris = _uris(["tcp:127.0.0.1:2856"])
    path = ["msrp://127.0.0.1:2856/a;tcp", "not a uri", "msrp://127.0.0.1:2856/b;tcp"]
    assert uris.count(path) == 2
    assert uris.count(["msrp://127.0.0.1:2856/x;tcp"] * 450) == 450


def test_config_aliases_key(tmp_path: Path) -> None:
    config = tmp_path / "msrpd.toml"
    config.write_text('[msrp]\naliases = ["relay.example.com", "msrps://[::1]:2855"]\n')
    assert load_config(config).msrp.aliases == ("relay.example.com", "msrps://[::1]:2855")
    assert load_config(None).msrp.aliases == ()


def test_names_answers_as_matches_for_the_uri_bytes_the_reader_gives() -> None:
    """names() (the relay route's to_us, on every frame) agrees with matches() whatever the
    session-id, remembers per URI without it, and keeps its memo bounded."""
    uris = _uris(["tcp:127.0.0.1:2856"], aliases=("relay.example.net",))
    cases = [
        "msrp://127.0.0.1:2856/sid;tcp",
        "msrp://127.0.0.1:2856/other/with/slashes;tcp",
        "msrp://127.0.0.1:2856;tcp",
        "MSRP://RELAY.EXAMPLE.NET:2856/Sid;tcp",
        "msrp://relay.example.net/x;tcp",
        "msrp://127.0.0.1:2856/no-transport",
        "msrp://127.0.0.1:2857/sid;tcp",
        "msrp://evil.example.com:2856/sid;tcp",
    ]
    for _ in range(2):  # the second round is answered from the memo
        assert [uris.names(u.encode()) for u in cases] == [_ours(uris, u) for u in cases]
    assert [uris.names(u.encode()) for u in cases] == [True] * 6 + [False] * 2
    for port in range(3000, 5000):
        assert not uris.names(f"msrp://10.0.0.1:{port}/s;tcp".encode())
    assert len(uris._memo) <= 1024
    assert uris.names(b"msrp://127.0.0.1:2856/again;tcp")
