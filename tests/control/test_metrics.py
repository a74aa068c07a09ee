"""MetricsServer on each address form `[metrics] listen` takes (IPv4, IPv6 in brackets, a
host name), answering real scrapes over real sockets from the supervisor's side of the loop."""

from __future__ import annotations

import socket
import time

import pytest

from msrpd.control.metrics import MetricsServer, ShmCollector
from msrpd.shm import ShmSet


def free_port(family: socket.AddressFamily, host: str) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def scrape(server: MetricsServer, family: socket.AddressFamily, host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=5) as client:
        client.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        server.on_readable()  # what the supervisor's select loop calls
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    assert client.family == family
    return answer


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("listen_host", "family", "connect_host"),
    [
        ("127.0.0.1", socket.AF_INET, "127.0.0.1"),
        ("localhost", socket.AF_INET, "127.0.0.1"),
        pytest.param(
            "[::1]",
            socket.AF_INET6,
            "::1",
            marks=pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback"),
        ),
    ],
)
def test_scrape_on_each_address_form(
    shm: ShmSet, listen_host: str, family: socket.AddressFamily, connect_host: str
) -> None:
    port = free_port(family, connect_host)
    server = MetricsServer(f"{listen_host}:{port}", ShmCollector(shm, time.time() - 5))
    try:
        assert server.sock.family == family
        answer = scrape(server, family, connect_host, port)
    finally:
        server.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK")
    assert b'msrpd_workers{state="running"} 0.0' in body
    uptime = next(line for line in body.splitlines() if line.startswith(b"msrpd_uptime_seconds "))
    assert 5.0 <= float(uptime.split()[1]) < 60.0
