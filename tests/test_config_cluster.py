"""[cluster] (issue 17): every key's checks, the rules between keys, the shipped file."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from msrpd.config import ClusterSettings, load_config
from msrpd.config.secret import SecretUrl
from msrpd.errors import ConfigError

ETC = Path(__file__).resolve().parent.parent / "etc" / "msrpd.toml"
USE_PATH = '[msrp]\nuse_path_addr = "relay1.example.com:2855"\n'


def problems_of(tmp_path: Path, text: str) -> tuple[str, ...]:
    path = tmp_path / "msrpd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def loaded(tmp_path: Path, text: str) -> ClusterSettings:
    path = tmp_path / "msrpd.toml"
    path.write_text(text)
    return load_config(path).cluster


BAD_VALUES = [
    ("redis", '""', "must be a redis://, rediss:// or unix:// URL"),
    ("redis", "6379", "must be a redis://, rediss:// or unix:// URL, got a int"),
    ("redis", '"http://127.0.0.1:6379"', "scheme must be one of redis, rediss, unix"),
    ("redis", '"127.0.0.1:6379"', "scheme must be one of redis, rediss, unix"),
    ("redis", '"redis://"', "needs a host"),
    ("redis", '"redis://127.0.0.1:99999"', "not a URL"),
    ("redis", '"redis://127.0.0.1:0"', "port must be 1..65535"),
    ("redis", '"redis://127.0.0.1:6379/zero"', "the path is the database number"),
    ("redis", '"unix://"', "needs a socket path"),
    ("node", '""', "1 to 64 letters"),
    ("node", '"relay 1"', "1 to 64 letters"),
    ("node", '"-relay"', "1 to 64 letters"),
    ("node", '"relay:1"', "1 to 64 letters"),
    ("node", f'"{"n" * 65}"', "1 to 64 letters"),
    ("node", "1", "1 to 64 letters"),
    ("key_prefix", '""', "1 to 32 letters"),
    ("key_prefix", '"a b"', "1 to 32 letters"),
    ("timeout", "0", "must be a number of seconds > 0 and at most 5"),
    ("timeout", "5.5", "must be a number of seconds > 0 and at most 5, got 5.5"),
    ("timeout", "nan", "must be a number of seconds > 0 and at most 5"),
    ("timeout", "true", "must be a number of seconds > 0 and at most 5"),
    ("heartbeat", "-1", "must be a number of seconds > 0"),
    ("node_ttl", '"5"', "must be a number of seconds > 0"),
    ("retry_max", "inf", "must be a number of seconds > 0"),
    ("node_ca", '"/nonexistent/node-ca.pem"', "no such file: /nonexistent/node-ca.pem"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD_VALUES)
def test_bad_value_names_its_key(tmp_path: Path, key: str, value: str, message: str) -> None:
    problems = problems_of(tmp_path, f"{USE_PATH}[cluster]\n{key} = {value}\n")
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"cluster.{key}: "), problems
    assert message in problems[0]


def test_every_key_is_covered_by_bad_values() -> None:
    covered = {key for key, _, _ in BAD_VALUES}
    assert covered == {f.name for f in dataclasses.fields(ClusterSettings)}


def test_unknown_key_is_named(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, '[cluster]\nnodes = "a"\n')
    assert problem == "cluster.nodes: unknown key (did you mean 'node'?)"


def test_defaults_no_cluster() -> None:
    cluster = load_config(None).cluster
    assert cluster.redis is None
    assert cluster.node == socket.gethostname().split(".")[0]
    assert (cluster.key_prefix, cluster.timeout, cluster.heartbeat) == ("msrpd:", 2.0, 1.0)
    assert (cluster.node_ttl, cluster.retry_max) == (5.0, 5.0)


def test_good_values_are_stored(tmp_path: Path) -> None:
    cluster = loaded(
        tmp_path,
        f"{USE_PATH}[cluster]\n"
        'redis = "redis://:secret@10.0.0.5:6380/2"\nnode = "relay-1.fra"\n'
        'key_prefix = "chat:"\ntimeout = 0.5\nheartbeat = 2\nnode_ttl = 7\nretry_max = 30\n',
    )
    url = SecretUrl("redis://:secret@10.0.0.5:6380/2", "redis://10.0.0.5:6380/2")
    assert cluster == ClusterSettings(url, "relay-1.fra", "chat:", 0.5, 2.0, 7.0, 30.0)
    assert "secret" not in repr(cluster) and "secret" not in str(cluster.redis)


@pytest.mark.parametrize(
    "url", ["redis://localhost", "rediss://r.example.com:6380/0", "unix:///run/redis.sock"]
)
def test_every_scheme_is_taken(tmp_path: Path, url: str) -> None:
    assert loaded(tmp_path, f'{USE_PATH}[cluster]\nredis = "{url}"\n').redis == SecretUrl(url, url)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://:s3cret@db.example.com:6380/2", "redis://db.example.com:6380/2"),
        ("rediss://msrpd:p@ss@s3cret@db:6380", "rediss://msrpd@db:6380"),
        ("redis://db:6380/1?password=s3cret", "redis://db:6380/1"),
        ("redis://msrpd@db/0?db=1&password=s3cret&socket_timeout=1", "redis://msrpd@db/0"),
        ("unix://:s3cret@/run/redis.sock?db=2", "unix:///run/redis.sock"),
        ("unix:///run/redis.sock?password=s3cret", "unix:///run/redis.sock"),
    ],
)
def test_the_password_never_shows(tmp_path: Path, url: str, redacted: str) -> None:
    cluster = loaded(tmp_path, f'{USE_PATH}[cluster]\nredis = "{url}"\n')
    assert cluster.redis == SecretUrl(url, redacted)
    assert str(cluster.redis) == redacted
    assert "s3cret" not in repr(cluster)


@pytest.mark.parametrize(
    "url",
    [
        "http://:s3cret@127.0.0.1:6379",
        "redis://:s3cret@127.0.0.1:99999",
        "redis://:s3cret@127.0.0.1:0",
        "redis://:s3cret@127.0.0.1:6379/zero",
        "redis://:s3cret@",
        "redis://127.0.0.1:6379/zero?password=s3cret",
        "redis://:s3cret@[::1:6379",
        "ftp://127.0.0.1:6379?password=s3cret",
        "unix://:s3cret@?password=s3cret",
    ],
)
def test_a_bad_url_is_refused_without_its_password(tmp_path: Path, url: str) -> None:
    (problem,) = problems_of(tmp_path, f'{USE_PATH}[cluster]\nredis = "{url}"\n')
    assert problem.startswith("cluster.redis: "), problem
    assert "s3cret" not in problem, problem


def test_a_cluster_needs_use_path_addr(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, '[cluster]\nredis = "redis://127.0.0.1"\n')
    assert problem == "msrp.use_path_addr: required when cluster.redis is set"


def test_node_ttl_must_outlast_heartbeat(tmp_path: Path) -> None:
    text = f'{USE_PATH}[cluster]\nredis = "redis://127.0.0.1"\nheartbeat = 5\nnode_ttl = 5\n'
    (problem,) = problems_of(tmp_path, text)
    assert problem == "cluster.node_ttl: must be more than heartbeat (5)"


def test_without_redis_the_other_keys_need_nothing(tmp_path: Path) -> None:
    assert loaded(tmp_path, "[cluster]\nheartbeat = 5\nnode_ttl = 1\n").redis is None


def test_shipped_file_documents_every_key() -> None:
    text = ETC.read_text().split("\n[cluster]\n", 1)[1]
    for f in dataclasses.fields(ClusterSettings):
        prefix = "\n#" if f.name in ("redis", "node", "node_ca") else "\n"
        assert f"{prefix}{f.name} = " in text, f.name


def test_node_ca_needs_a_certificate_to_present(tmp_path: Path) -> None:
    """Forwarding between nodes with no node certificate: the next node would take this one
    for a client (rated, failures counted, loops unnoticed)."""
    ca = tmp_path / "node-ca.pem"
    ca.write_text("not read before the cross-checks\n")
    text = f'{USE_PATH}[cluster]\nredis = "redis://127.0.0.1"\nnode_ca = "{ca}"\n'
    (problem,) = problems_of(tmp_path, text)
    assert problem == "cluster.node_ca: needs tls.certificate and tls.private_key"


def test_node_ca_is_not_the_clients_ca(tmp_path: Path) -> None:
    """The CA that makes a TLS peer a node must be kept for the nodes: the clients' CA
    (tls.ca) as node_ca would make every client holding a certificate a node."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not read before the cross-checks\n")
    cert = f'certificate = "{ca}"\nprivate_key = "{ca}"\nca = "{ca}"\n'
    text = f'{USE_PATH}[tls]\n{cert}[cluster]\nredis = "redis://127.0.0.1"\nnode_ca = "{ca}"\n'
    (problem,) = problems_of(tmp_path, text)
    assert problem == "cluster.node_ca: must not be tls.ca: a CA for the nodes alone"
