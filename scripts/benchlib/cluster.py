"""Several msrpd nodes on this machine as one relay under load (issue 17's cluster mode).

Every node runs the default relay route with a TLS listener, its own ports and run dir, its
own address in Use-Path (`[msrp] use_path_addr`, its TLS port), and the same user store and
certificate (`[tls] ca` names the certificate's CA, so a node verifies the next node it
dials). With /usr/bin/redis-server the nodes share a private Redis (`[cluster]`, a node name
each), started before them and stopped after them by its pid; without it they run without
`[cluster]` (`label` says so). Alice and Bob of pair n AUTH on nodes n and n+1 (modulo the
count), so every pair crosses two nodes: node A forwards Alice's SEND outbound to node B's
token over msrps, node B delivers it inbound to Bob (RFC 4976 §6.4).

One node is the single-node baseline of the same load: both tokens are its own, so the
second hop is routed inside it (msrpd/workers/loopback.py) instead of over a connection.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from .relays import Msrpd, Relay, Usage, free_port, make_certificate

REDIS_SERVER = Path("/usr/bin/redis-server")


class RedisServer:
    """A private redis-server on 127.0.0.1: no persistence, files in a temporary dir."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with (self.dir / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(REDIS_SERVER), *self.options()],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 10
        while not self._answers():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server did not start: {self.log()}")
            time.sleep(0.05)

    def options(self) -> list[str]:
        """On 127.0.0.1 only, nothing written to disk but its log."""
        where = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        return [*where, "--save", "", "--appendonly", "no"]

    def _answers(self) -> bool:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", self.port), 1) as s,
        ):
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        """By its pid: SIGTERM, SIGKILL after 5 s."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "redis.log").read_text()[-2000:]
        return ""


class MsrpdCluster(Relay):
    name = "cluster"

    def __init__(self, count: int, children: int, extra: list[str] | None, pure: bool) -> None:
        super().__init__(children)  # its run_dir holds what the nodes share
        cert, key, ca_file = make_certificate(self.run_dir)
        self.tls_ca = str(ca_file)
        self.users = self.run_dir / "users.sqlite"
        self.redis = RedisServer() if count > 1 and REDIS_SERVER.exists() else None
        self.nodes = [Msrpd(children, extra, "relay", True, pure) for _ in range(count)]
        for n, node in enumerate(self.nodes, 1):
            node.users, node.tls_ca = self.users, self.tls_ca
            node.sections["auth"]["users"] = f'"{self.users}"'
            node.sections["tls"] = {
                "certificate": f'"{cert}"',
                "private_key": f'"{key}"',
                "ca": f'"{ca_file}"',  # what the next node's certificate is checked against
            }
            if count > 1:
                node.sections["msrp"] = {"use_path_addr": f'"127.0.0.1:{node.tls_port}"'}
            if self.redis is not None:
                node.sections["cluster"] = {"redis": f'"{self.redis.url}"', "node": f'"node{n}"'}
            node.write_config()
        self.port = self.nodes[0].port
        self.auth_nodes = tuple((node.tls_port, node.auth_uri) for node in self.nodes)
        if count == 1:
            self.label = "msrpd, 1 node"
        else:
            shared = "one Redis" if self.redis is not None else "no [cluster]: no redis-server"
            self.label = f"msrpd, {count} nodes ({shared})"

    def add_users(self, names: list[str]) -> None:
        self.nodes[0].add_users(names)  # the store every node reads

    def main_pid(self) -> int | None:
        return self.nodes[0].main_pid()

    def start(self) -> None:
        self.add_users([])  # the store exists before the nodes start
        if self.redis is not None:
            self.redis.start()
        for node in self.nodes:
            node.start()
        self.label += ", " + self.nodes[0].label.rsplit(", ", 1)[1]  # the hot path

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self.redis is not None:
            self.redis.stop()
        self.cleanup()

    def processes(self) -> list[psutil.Process]:
        """Every process of every node: supervisor, workers, cluster agent (not Redis)."""
        return [proc for node in self.nodes for proc in node.processes()]

    def usage(self, memory: bool = False) -> Usage:
        each = [node.usage(memory) for node in self.nodes]
        return Usage(
            sum(u.cpu for u in each),
            sum(u.rss for u in each),
            sum(u.pss for u in each),
            sum(u.procs for u in each),
            self.redis_cpu(),
        )

    def redis_cpu(self) -> float | None:
        """The Redis server's user + system CPU seconds so far; None without one."""
        if self.redis is None or self.redis.proc is None:
            return None
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(self.redis.proc.pid).cpu_times()
            return float(times.user + times.system)
        return None

    def worker_pids(self) -> list[int]:
        return [pid for node in self.nodes for pid in node.worker_pids()]

    def links(self) -> str:
        """The TCP connections the nodes' workers hold to another node's TLS port: the SENDs
        of the pairs went over these ("2 to node1, 2 to node2"); "" for one node."""
        if len(self.nodes) == 1:
            return ""
        counts = []
        for n, node in enumerate(self.nodes, 1):
            held = 0
            others = [other for other in self.nodes if other is not node]
            for pid in [p for other in others for p in other.worker_pids()]:
                with contextlib.suppress(psutil.Error):
                    held += sum(
                        1
                        for c in psutil.Process(pid).net_connections(kind="tcp")
                        if c.raddr and c.raddr.port == node.tls_port
                    )
            counts.append(f"{held} to node{n}")
        return ", ".join(counts)

    def log_tail(self) -> str:
        return "\n".join(f"node{n}:\n{node.log_tail()}" for n, node in enumerate(self.nodes, 1))
