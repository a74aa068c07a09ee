"""Tests for msrpd.config: defaults, etc/msrpd.toml, every key's checks, listen parsing."""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from msrpd.config import (
    DEFAULT_PORT,
    AuthSettings,
    ControlSettings,
    CoreSettings,
    LimitsSettings,
    ListenAddress,
    LogSettings,
    MetricsSettings,
    MsrpSettings,
    Settings,
    TlsSettings,
    WebSocketSettings,
    default_run_dir,
    load_config,
)
from msrpd.config.address import parse_host_port, parse_listen
from msrpd.config.secret import SecretUrl
from msrpd.errors import ConfigError, HaltSupervisor

ETC = Path(__file__).resolve().parent.parent / "etc" / "msrpd.toml"


def write(tmp_path: Path, text: str, name: str = "msrpd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value.problems


# Defaults ---------------------------------------------------------------------------------------


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    settings = load_config(None)
    assert settings.source is None
    assert settings.core == CoreSettings(
        children=6,
        listen=(ListenAddress("tcp", "127.0.0.1", 2855),),
        run_dir=default_run_dir(),
        log_level="info",
        drain_timeout=30.0,
        heartbeat_timeout=10.0,
        idle_timeout=3600.0,
    )
    assert settings.msrp == MsrpSettings(
        sipmsg=True,
        cmap_size=8,
        cmap_max_entries=32768,
        timer_interval=60,
        auth_min_expires=60,
        auth_max_expires=3600,
        use_path_addr=None,
        event_callback="ksr_msrp_event",
        route=None,
        block_unknown_methods=False,
        max_body=1048576,
        max_head=16384,
    )
    assert settings.auth == AuthSettings(realm="myrealm", users=None)
    assert settings.tls == TlsSettings(None, None, None, verify_client=False)
    assert settings.control == ControlSettings(fifo=None)
    assert settings.metrics == MetricsSettings(listen=None)
    assert DEFAULT_PORT == 2855


@pytest.mark.parametrize(("cpus", "children"), [(None, 2), (1, 1), (512, 256)])
def test_default_children_follows_cpu_count(
    monkeypatch: pytest.MonkeyPatch, cpus: int | None, children: int
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    assert load_config(None).core.children == children


def test_default_run_dir_uses_xdg_runtime_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert default_run_dir() == Path("/run/user/1000/msrpd")
    assert load_config(None).core.run_dir == Path("/run/user/1000/msrpd")


@pytest.mark.parametrize("value", [None, "", "relative/dir"])
def test_default_run_dir_without_usable_xdg(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    else:
        monkeypatch.setenv("XDG_RUNTIME_DIR", value)
    assert default_run_dir() == Path(f"/tmp/msrpd-{os.getuid()}")


def test_settings_are_frozen() -> None:
    settings = load_config(None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.core.children = 3  # type: ignore[misc]


# etc/msrpd.toml -------------------------------------------------------------------------------


def test_shipped_file_equals_the_defaults() -> None:
    settings = load_config(ETC)
    assert settings.source == ETC
    assert dataclasses.replace(settings, source=None) == load_config(None)


def toml_fields(cls: type[Any]) -> Iterator[dataclasses.Field[Any]]:
    """The fields a section's TOML keys set: a nested group's fields (the TOML stays flat)."""
    for f in dataclasses.fields(cls):
        if "group" in f.metadata:
            yield from toml_fields(f.metadata["group"])
        else:
            yield f


def test_shipped_file_sets_every_key_with_a_non_none_default() -> None:
    text = ETC.read_text()
    sections = (CoreSettings, MsrpSettings, LimitsSettings, AuthSettings, TlsSettings)
    for section in (*sections, WebSocketSettings):
        for f in toml_fields(section):
            if f.name in ("children", "run_dir"):
                assert f"\n#{f.name} = " in text
            elif f.default is None:
                assert f"\n#{f.name} = " in text, f.name
            else:
                assert f"\n{f.name} = " in text, f.name
    assert '\n#fifo = "' in text
    assert '\n#listen = "127.0.0.1:9855"' in text


# Each key's bad values -----------------------------------------------------------------------

BAD_VALUES = [
    ("core", "children", "0", "must be an integer from 1 to 256, got 0"),
    ("core", "children", "257", "must be an integer from 1 to 256, got 257"),
    ("core", "children", '"x"', "must be an integer from 1 to 256, got 'x'"),
    ("core", "children", "true", "must be an integer from 1 to 256, got True"),
    ("core", "children", "2.0", "must be an integer from 1 to 256, got 2.0"),
    ("core", "listen", '"tcp:127.0.0.1:2855"', "must be a non-empty list"),
    ("core", "listen", "[]", "must be a non-empty list"),
    ("core", "listen", "[1]", "must be a non-empty string, got 1"),
    ("core", "run_dir", "5", "must be a non-empty string, got 5"),
    ("core", "run_dir", '""', "must be a non-empty string, got ''"),
    ("core", "log_level", '"trace"', "must be one of debug, info, warning, error, got 'trace'"),
    ("core", "log_level", '"INFO"', "got 'INFO'"),
    ("core", "drain_timeout", "0", "must be a number of seconds > 0, got 0"),
    ("core", "drain_timeout", "-1.5", "got -1.5"),
    ("core", "drain_timeout", "nan", "got nan"),
    ("core", "retire_timeout", "-1", "must be a number of seconds >= 0 (0: off), got -1"),
    ("core", "retire_timeout", "nan", "got nan"),
    ("core", "retire_timeout", "true", "got True"),
    ("core", "heartbeat_timeout", "inf", "got inf"),
    ("core", "heartbeat_timeout", '"10"', "got '10'"),
    ("core", "idle_timeout", "false", "got False"),
    ("core", "backlog", "0", "must be an integer from 1 to 1048576, got 0"),
    ("core", "backlog", "1.5", "got 1.5"),
    ("core", "handoff_memory", "65535", "must be an integer >= 65536, got 65535"),
    ("core", "handoff_memory", "true", "got True"),
    ("core", "head_timeout", "0", "must be a number of seconds > 0, got 0"),
    ("core", "balance", "1", "must be true or false, got 1"),
    ("limits", "probation", "0", "must be a number of seconds > 0, got 0"),
    ("limits", "max_conns_per_addr", "-1", "must be an integer >= 0, got -1"),
    ("limits", "max_sessions_per_user", "33", "must be an integer from 0 to 32, got 33"),
    ("limits", "max_outbound_per_second", "-1", "must be a number per second >= 0 (0: off)"),
    ("limits", "session_byte_rate", "nan", "got nan"),
    ("limits", "rate_burst", "0", "must be a number of seconds > 0, got 0"),
    ("msrp", "sipmsg", "1", "must be true or false, got 1"),
    ("msrp", "cmap_size", "17", "must be an integer from 0 to 16, got 17"),
    ("msrp", "cmap_size", "-1", "got -1"),
    ("msrp", "cmap_max_entries", "0", "must be an integer from 1 to 16777216, got 0"),
    ("msrp", "cmap_max_entries", "16777217", "got 16777217"),
    ("msrp", "timer_interval", "0", "must be an integer >= 1, got 0"),
    ("msrp", "auth_min_expires", "0", "must be an integer >= 1, got 0"),
    ("msrp", "auth_max_expires", '"3600"', "must be an integer >= 1, got '3600'"),
    ("msrp", "use_path_addr", '"msrp://host:2855/path"', "no path or parameters"),
    ("msrp", "use_path_addr", '"host:2855;tcp"', "no path or parameters"),
    ("msrp", "use_path_addr", '"host :2855"', "must not contain spaces"),
    ("msrp", "use_path_addr", '"msrp://:2855"', "empty host"),
    ("msrp", "use_path_addr", '""', "must be a non-empty string"),
    ("msrp", "use_path_addr", '"::1:2855"', "IPv6 address must be in brackets"),
    ("msrp", "use_path_addr", '"host:99999"', "port must be from 1 to 65535"),
    ("msrp", "aliases", '"relay.example.com"', "must be a list of [msrp[s]://]host[:port]"),
    ("msrp", "aliases", '["relay.example.com/x"]', "no path or parameters"),
    ("msrp", "aliases", '["ok.example.com", ""]', "must be a non-empty string"),
    ("msrp", "event_callback", '"not-an-identifier"', "must be a Python identifier"),
    ("msrp", "event_callback", '"def"', "must be a Python identifier, got 'def'"),
    ("msrp", "route", '"missing.py"', "no such file: "),
    ("msrp", "block_unknown_methods", '"no"', "must be true or false, got 'no'"),
    ("msrp", "max_body", "1023", "must be an integer >= 1024, got 1023"),
    ("msrp", "max_head", "1023", "must be an integer from 1024 to 1048576, got 1023"),
    ("msrp", "max_head", "1048577", "got 1048577"),
    ("msrp", "transaction_timeout", "0", "must be a number of seconds > 0, got 0"),
    ("msrp", "transaction_timeout", '"30"', "got '30'"),
    ("msrp", "connect_timeout", "0", "must be a number of seconds > 0, got 0"),
    ("msrp", "connect_fail_ttl", '"5"', "got '5'"),
    ("msrp", "max_connects", "0", "must be an integer >= 1, got 0"),
    ("msrp", "max_connects_per_conn", "0", "must be an integer >= 1, got 0"),
    ("msrp", "connect_rate", "0", "must be a number per second > 0, got 0"),
    ("msrp", "max_connecting_bytes", "1023", "must be an integer >= 1024, got 1023"),
    ("auth", "realm", '""', "must be a non-empty string without quotes"),
    ("auth", "realm", "'a\"b'", "without quotes"),
    ("auth", "realm", "42", "got 42"),
    ("auth", "users", "[]", "must be a file path or a postgresql:// URL, got []"),
    ("auth", "users", '"mysql://u@h/db"', "mysql:// is not a store"),
    ("auth", "users", '"postgresql://u:pw@h:99999/db"', "(postgresql://u@h:99999/db): port"),
    ("auth", "users", '"postgresql://u@h/db?bogus=1"', 'invalid URI query parameter: "bogus"'),
    ("auth", "users_table", '"1table"', '"table" or "schema.table"'),
    ("auth", "users_table", '"a.b.c"', '"table" or "schema.table"'),
    ("auth", "users_table", '"sub; DROP"', '"table" or "schema.table"'),
    ("auth", "users_cache_ttl", "0.5", "from 1 to 86400, got 0.5"),
    ("auth", "users_cache_ttl", "true", "from 1 to 86400, got True"),
    ("auth", "users_timeout", "0", "must be a number of seconds > 0"),
    ("tls", "certificate", '"nope.pem"', "no such file: "),
    ("tls", "private_key", '"nope.pem"', "no such file: "),
    ("tls", "ca", '"nope.pem"', "no such file: "),
    ("tls", "verify_client", '"yes"', "must be true or false, got 'yes'"),
    ("control", "fifo", "1", "must be a non-empty string, got 1"),
    ("metrics", "listen", '"127.0.0.1"', "missing :port"),
    ("metrics", "listen", '"::1:9000"', "IPv6 address must be in brackets"),
    ("metrics", "listen", '"[::1]:9000/metrics"', "no path or parameters"),
    ("log", "target", '"journal"', "one of stderr, file, syslog"),
    ("log", "file", "1", "must be a non-empty string, got 1"),
    ("log", "json", '"yes"', "must be true or false, got 'yes'"),
    ("log", "accounting", "1", "must be true or false, got 1"),
]


@pytest.mark.parametrize(("section", "key", "value", "message"), BAD_VALUES)
def test_bad_value_names_its_key(
    tmp_path: Path, section: str, key: str, value: str, message: str
) -> None:
    problems = problems_of(tmp_path, f"[{section}]\n{key} = {value}\n")
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{section}.{key}: ")
    assert message in problems[0]


def test_every_field_is_covered_by_bad_values() -> None:
    covered = {(section, key) for section, key, _, _ in BAD_VALUES}
    for name, cls in [
        ("core", CoreSettings),
        ("msrp", MsrpSettings),
        ("auth", AuthSettings),
        ("tls", TlsSettings),
        ("control", ControlSettings),
        ("metrics", MetricsSettings),
        ("log", LogSettings),
    ]:
        for f in toml_fields(cls):
            assert (name, f.name) in covered


def test_good_values_are_stored(tmp_path: Path) -> None:
    (tmp_path / "r.py").write_text("")
    settings = load_config(
        write(
            tmp_path,
            """
            [core]
            children = 3
            log_level = "debug"
            drain_timeout = 5
            retire_timeout = 600
            [msrp]
            sipmsg = false
            cmap_size = 0
            use_path_addr = "msrps://relay.example.com:2856"
            route = "r.py"
            auth_min_expires = 10
            auth_max_expires = 10
            connect_timeout = 3
            max_connects = 7
            transaction_timeout = 2.5
            [auth]
            users = "users.sqlite"
            [metrics]
            listen = "[::1]:9855"
            """.replace("\n            ", "\n"),
        )
    )
    assert settings.core.children == 3
    assert settings.core.log_level == "debug"
    assert settings.core.drain_timeout == 5.0
    assert isinstance(settings.core.drain_timeout, float)
    assert settings.core.retire_timeout == 600.0
    assert isinstance(settings.core.retire_timeout, float)
    assert settings.msrp.sipmsg is False
    assert settings.msrp.cmap_size == 0
    assert settings.msrp.use_path_addr == "msrps://relay.example.com:2856"
    assert settings.msrp.auth_max_expires == settings.msrp.auth_min_expires == 10
    # [msrp]'s connect keys fill the nested group msrp.dialing; the others keep their defaults.
    assert settings.msrp.dialing.connect_timeout == 3.0
    assert settings.msrp.dialing.max_connects == 7
    assert settings.msrp.dialing.connect_rate == 20.0
    assert settings.msrp.transaction_timeout == 2.5
    assert settings.auth.users == tmp_path / "users.sqlite"
    assert settings.metrics.listen == "[::1]:9855"


def test_a_postgresql_url_is_kept_whole_and_never_shown(tmp_path: Path) -> None:
    url = "postgresql://kam:s3cr3t@db.example.com:5433/kamailio?sslmode=require"
    settings = load_config(write(tmp_path, f'[auth]\nusers = "{url}"\n'))
    users = settings.auth.users
    assert isinstance(users, SecretUrl) and users.url == url
    assert users.redacted == str(users) == "postgresql://kam@db.example.com:5433/kamailio"
    assert "s3cr3t" not in repr(settings.auth) and "s3cr3t" not in str(users)
    assert (settings.auth.users_table, settings.auth.users_cache_ttl) == ("subscriber", 30.0)
    assert settings.auth.users_timeout == 2.0
    assert isinstance(pickle.loads(pickle.dumps(settings)).auth.users, SecretUrl)  # to workers


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:s3cr3t%zz@h/db",  # libpq quotes the token it cannot decode
        "postgres://u@h/db?password=s3cr3t%zz",
        "postgresql://u:s3cr3t@h:port/db",
    ],
)
def test_a_bad_postgresql_url_is_refused_without_its_password(tmp_path: Path, url: str) -> None:
    problems = problems_of(tmp_path, f'[auth]\nusers = "{url}"\n')
    assert len(problems) == 1 and problems[0].startswith("auth.users: not a valid PostgreSQL URL")
    assert "s3cr3t" not in problems[0]


@pytest.mark.parametrize(
    "value", ["127.0.0.1:5060", "msrp://127.0.0.1:5060", "relay.example", "[::1]:2855"]
)
def test_use_path_addr_is_stored_as_given(tmp_path: Path, value: str) -> None:
    settings = load_config(write(tmp_path, f'[msrp]\nuse_path_addr = "{value}"\n'))
    assert settings.msrp.use_path_addr == value


def test_auth_max_expires_below_min(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "[msrp]\nauth_min_expires = 600\nauth_max_expires = 300\n")
    assert problems == ("msrp.auth_max_expires: must be >= auth_min_expires (600), got 300",)


def test_auth_max_expires_below_default_min(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "[msrp]\nauth_max_expires = 30\n")
    assert problems == ("msrp.auth_max_expires: must be >= auth_min_expires (60), got 30",)


# Several problems, unknown keys, file errors --------------------------------------------------


def test_every_problem_is_listed_in_one_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[core]\nchildren = 0\nlog_level = "loud"\n[msrp]\ncmap_size = 99\n[auth]\nrelm = "x"\n',
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert [p.split(":")[0] for p in error.problems] == [
        "core.children",
        "core.log_level",
        "msrp.cmap_size",
        "auth.relm",
    ]
    assert error.source == path
    lines = str(error).splitlines()
    assert len(lines) == 4
    assert all(line.startswith(f"{path}: ") for line in lines)
    assert lines[0] == f"{path}: core.children: must be an integer from 1 to 256, got 0"


def test_unknown_key_and_section(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "[core]\nchidren = 4\nweird = 1\n[extra]\nx = 1\n")
    assert problems == (
        "extra: unknown section",
        "core.chidren: unknown key (did you mean 'children'?)",
        "core.weird: unknown key",
    )


def test_top_level_key_and_non_table_section(tmp_path: Path) -> None:
    assert problems_of(tmp_path, 'children = 4\nmsrp = "x"\n') == (
        "children: unknown section",
        "msrp: must be a table, got 'x'",
    )


def test_nested_table_is_an_unknown_key(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "[core.extra]\na = 1\n") == ("core.extra: unknown key",)


def test_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[core]\nlog_level = "info"\nchildren = = 2\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.startswith("invalid TOML: ")
    assert "line 3" in problem
    assert str(info.value).startswith(f"{path}: invalid TOML: ")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'[auth]\nrealm = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.problems == ("invalid TOML: not UTF-8 text",)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: no such file"
    assert info.value.problems == ("no such file",)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.problems[0].startswith("cannot read: ")


def test_relative_config_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "route.py").write_text("")
    write(tmp_path / "conf", '[msrp]\nroute = "route.py"\n')
    monkeypatch.chdir(tmp_path)
    settings = load_config(Path("conf/msrpd.toml"))
    assert settings.source == tmp_path / "conf" / "msrpd.toml"
    assert settings.msrp.route == tmp_path / "conf" / "route.py"


# listen -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "proto", "host", "port", "family", "uri_host"),
    [
        ("tcp:127.0.0.1:2855", "tcp", "127.0.0.1", 2855, socket.AF_INET, "127.0.0.1:2855"),
        ("tls:[::1]:2856", "tls", "::1", 2856, socket.AF_INET6, "[::1]:2856"),
        ("tcp:[::]:1", "tcp", "::", 1, socket.AF_INET6, "[::]:1"),
        ("tcp:0.0.0.0:65535", "tcp", "0.0.0.0", 65535, socket.AF_INET, "0.0.0.0:65535"),
        (
            "tls:relay.example.com:2855",
            "tls",
            "relay.example.com",
            2855,
            socket.AF_INET,
            "relay.example.com:2855",
        ),
        ("tcp:localhost:2855", "tcp", "localhost", 2855, socket.AF_INET, "localhost:2855"),
        ("ws:127.0.0.1:8080", "ws", "127.0.0.1", 8080, socket.AF_INET, "127.0.0.1:8080"),
        ("wss:[::1]:443", "wss", "::1", 443, socket.AF_INET6, "[::1]:443"),
    ],
)
def test_parse_listen(
    text: str, proto: str, host: str, port: int, family: socket.AddressFamily, uri_host: str
) -> None:
    address = parse_listen(text)
    assert (address.proto, address.host, address.port) == (proto, host, port)
    assert address.family == family
    assert address.uri_host == uri_host
    assert str(address) == address.sock_text == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9855", ("127.0.0.1", 9855)),
        ("[0:0:0:0:0:0:0:1]:9855", ("::1", 9855)),
        ("metrics.example:80", ("metrics.example", 80)),
    ],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "[::1]", "::1:9855", "host:0", "host:x"])
def test_parse_host_port_errors(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_host_port(text)


def test_parse_listen_normalizes_ipv6() -> None:
    address = parse_listen("tcp:[0:0:0:0:0:0:0:1]:2855")
    assert address.host == "::1"
    assert str(address) == "tcp:[::1]:2855"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tcp:::1:2855", "an IPv6 address must be in brackets"),
        ("tcp:fe80::1:2855", "an IPv6 address must be in brackets"),
        ("udp:127.0.0.1:2855", "proto tcp, tls, ws or wss"),
        ("127.0.0.1:2855", "proto tcp, tls, ws or wss"),
        ("tcp", "proto tcp, tls, ws or wss"),
        ("tcp:127.0.0.1", "missing :port"),
        ("tcp:127.0.0.1:", "port must be from 1 to 65535, got ''"),
        ("tcp:127.0.0.1:0", "port must be from 1 to 65535, got '0'"),
        ("tcp:127.0.0.1:65536", "port must be from 1 to 65535, got '65536'"),
        ("tcp:127.0.0.1:http", "port must be from 1 to 65535, got 'http'"),
        ("tcp:127.0.0.1:+80", "port must be from 1 to 65535"),
        ("tcp::2855", "empty host"),
        ("tcp:[::1:2855", "'[' without ']'"),
        ("tcp:[::1]2855", "text after ']' must be :port"),
        ("tcp:[127.0.0.1]:2855", "not an IPv6 address in brackets"),
        ("tcp:[::1]", "missing :port"),
        ("tcp:256.1.1.1:2855", "not an IPv4 address"),
        ("tcp:bad_host:2855", "not an IP address or hostname"),
        ("tcp:-bad.example:2855", "not an IP address or hostname"),
        ("tcp: 127.0.0.1:2855", "not an IP address or hostname"),
    ],
)
def test_parse_listen_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(repr(text))) as info:
        parse_listen(text)
    assert message in str(info.value)


def test_listen_entries_are_loaded_in_order(tmp_path: Path) -> None:
    settings = load_config(
        write(tmp_path, '[core]\nlisten = ["tcp:127.0.0.1:2855", "tcp:[::1]:2855"]\n')
    )
    assert settings.core.listen == (
        ListenAddress("tcp", "127.0.0.1", 2855),
        ListenAddress("tcp", "::1", 2855),
    )


def test_listen_lists_every_bad_entry(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path, '[core]\nlisten = ["tcp:::1:2855", "tcp:127.0.0.1:2855", "tcp:h:0"]\n'
    )
    assert problems == (
        "core.listen: 'tcp:::1:2855': an IPv6 address must be in brackets, as in [::1]:2855",
        "core.listen: 'tcp:h:0': port must be from 1 to 65535, got '0'",
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("tcp:127.0.0.1:2855", "tcp:127.0.0.1:2855"),
        ("tcp:127.0.0.1:2855", "tls:127.0.0.1:2855"),
        ("tcp:[::1]:2855", "tcp:[0::1]:2855"),
    ],
)
def test_listen_duplicates(tmp_path: Path, first: str, second: str) -> None:
    problems = problems_of(tmp_path, f'[core]\nlisten = ["{first}", "{second}"]\n')
    assert len(problems) == 1
    assert problems[0].startswith("core.listen: ")
    assert "uses the same host and port as" in problems[0]


# tls --------------------------------------------------------------------------------------------


def test_tls_listen_needs_certificate_and_key(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, '[core]\nlisten = ["tcp:127.0.0.1:2855", "tls:[::1]:2856"]\n')
    assert problems == (
        "tls.certificate: required by the listen address tls:[::1]:2856",
        "tls.private_key: required by the listen address tls:[::1]:2856",
    )


def test_wss_listen_needs_certificate_and_key(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, '[core]\nlisten = ["ws:127.0.0.1:80", "wss:[::1]:443"]\n')
    assert problems == (
        "tls.certificate: required by the listen address wss:[::1]:443",
        "tls.private_key: required by the listen address wss:[::1]:443",
    )


def test_websocket_section(tmp_path: Path) -> None:
    settings = load_config(
        write(
            tmp_path,
            '[websocket]\norigins = ["HTTPS://Chat.Example/"]\nmax_message = 4096\n'
            "ping_interval = 0\n",
        )
    )
    ws = settings.websocket
    assert ws.origins == ("https://chat.example",)
    assert (ws.max_message, ws.ping_interval, ws.upgrade_timeout) == (4096, 0.0, 10.0)
    problems = problems_of(
        tmp_path, '[websocket]\norigins = ["chat.example"]\nmax_upgrade_bytes = 10\n'
    )
    assert problems == (
        "websocket.origins: must be a list of scheme://host[:port] strings, got ['chat.example']",
        "websocket.max_upgrade_bytes: must be an integer from 1024 to 1048576, got 10",
    )


def test_tls_listen_with_missing_files(tmp_path: Path) -> None:
    (tmp_path / "key.pem").write_text("key")
    problems = problems_of(
        tmp_path,
        '[core]\nlisten = ["tls:127.0.0.1:2856"]\n'
        '[tls]\ncertificate = "cert.pem"\nprivate_key = "key.pem"\n',
    )
    assert problems == (f"tls.certificate: no such file: {tmp_path / 'cert.pem'}",)


def test_tls_listen_with_files(tmp_path: Path) -> None:
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (tmp_path / name).write_text(name)
    settings = load_config(
        write(
            tmp_path,
            '[core]\nlisten = ["tls:127.0.0.1:2856"]\n[tls]\ncertificate = "cert.pem"\n'
            f'private_key = "{tmp_path / "key.pem"}"\nca = "ca.pem"\nverify_client = true\n',
        )
    )
    assert settings.tls == TlsSettings(
        certificate=tmp_path / "cert.pem",
        private_key=tmp_path / "key.pem",
        ca=tmp_path / "ca.pem",
        verify_client=True,
    )
    assert settings.core.listen[0].proto == "tls"


def test_verify_client_needs_ca(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "[tls]\nverify_client = true\n") == (
        "tls.ca: required when tls.verify_client is true",
    )


def test_certificate_must_be_a_file(tmp_path: Path) -> None:
    (tmp_path / "dir.pem").mkdir()
    problems = problems_of(tmp_path, '[tls]\ncertificate = "dir.pem"\n')
    assert problems == (f"tls.certificate: no such file: {tmp_path / 'dir.pem'}",)


# route ------------------------------------------------------------------------------------------


def test_route_is_relative_to_the_config_directory(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "routes").mkdir(parents=True)
    (conf / "routes" / "mine.py").write_text("")
    settings = load_config(write(conf, '[msrp]\nroute = "routes/mine.py"\n'))
    assert settings.msrp.route == conf / "routes" / "mine.py"


def test_route_relative_to_cwd_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mine.py").write_text("")
    conf = tmp_path / "conf"
    conf.mkdir()
    monkeypatch.chdir(tmp_path)
    problems = problems_of(conf, '[msrp]\nroute = "mine.py"\n')
    assert problems == (f"msrp.route: no such file: {conf / 'mine.py'}",)


def test_absolute_route(tmp_path: Path) -> None:
    route = tmp_path / "abs.py"
    route.write_text("")
    conf = tmp_path / "conf"
    conf.mkdir()
    assert load_config(write(conf, f'[msrp]\nroute = "{route}"\n')).msrp.route == route


# children override ------------------------------------------------------------------------------


def test_children_override_beats_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[core]\nchildren = 4\n")
    assert load_config(path).core.children == 4
    assert load_config(path, children=7).core.children == 7
    assert load_config(None, children=1).core.children == 1


@pytest.mark.parametrize("value", [0, 257, True])
def test_children_override_is_checked(value: int) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, children=value)
    assert info.value.problems == (
        f"core.children (override): must be an integer from 1 to 256, got {value!r}",
    )
    assert info.value.source is None
    assert str(info.value) == info.value.problems[0]


def test_children_override_with_file_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "[core]\nchildren = 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, children=0)
    assert [p.split(":")[0] for p in info.value.problems] == [
        "core.children",
        "core.children (override)",
    ]
    # A valid override does not hide a bad value in the file.
    with pytest.raises(ConfigError):
        load_config(path, children=2)


# errors.py --------------------------------------------------------------------------------------


def test_config_error_needs_a_problem_and_pickles() -> None:
    with pytest.raises(TypeError):
        ConfigError()
    error = ConfigError("a: b", "c: d", source=Path("/x.toml"))
    copy = pickle.loads(pickle.dumps(error))
    assert copy.problems == ("a: b", "c: d")
    assert copy.source == Path("/x.toml")
    assert str(copy) == "/x.toml: a: b\n/x.toml: c: d"


def test_halt_supervisor() -> None:
    halt = HaltSupervisor("worker failed to boot", 3)
    assert (halt.reason, halt.exit_status) == ("worker failed to boot", 3)
    assert HaltSupervisor("stop").exit_status == 1
    assert "worker failed to boot" in str(halt)
    copy = pickle.loads(pickle.dumps(halt))
    assert (copy.reason, copy.exit_status) == ("worker failed to boot", 3)


def test_settings_tree_is_hashable_and_comparable() -> None:
    assert hash(load_config(None)) == hash(load_config(None))
    assert Settings() == load_config(None)


def test_grouped_keys_stay_flat_in_the_file(tmp_path: Path) -> None:
    """msrp.dialing groups the connect keys in the tree only: the file names them in [msrp],
    a misspelt one gets its hint, and the group's name is no key."""
    problems = problems_of(tmp_path, "[msrp]\nconnect_timout = 3\ndialing = 1\n")
    assert problems == (
        "msrp.connect_timout: unknown key (did you mean 'connect_timeout'?)",
        "msrp.dialing: unknown key",
    )
