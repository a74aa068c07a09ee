"""The metrics endpoint: Prometheus text format on `[metrics] listen`, served by the supervisor.

Strategy:
- prometheus_client renders the exposition format (its escaping, TYPE/HELP lines and
  `_total` suffixes are the spec); a custom collector reads the shared-memory counters at
  scrape time, so workers do nothing extra per frame. Counters carry a `worker` label (the
  slot) because a slow or hot worker is what an operator looks for; totals are a PromQL sum.
- We do not use prometheus_client's HTTP server: it runs a thread, and a process that forks
  workers must not have threads (a lock held at fork time stays held in the child). The
  supervisor's select loop accepts instead; one scrape is one short blocking exchange with a
  small deadline, bounded in bytes and time, then the connection is closed.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..config.address import parse_host_port
from ..rundir import AGENT_INDEX
from ..shm import ShmSet, WorkerState

__all__ = ["MetricsServer", "ShmCollector"]

logger = logging.getLogger(__name__)

DEADLINE = 0.5
MAX_REQUEST = 8192

_CLUSTER_BANS = "Cluster bans: made here (out), heard from Redis (in)"
_LIMITED = "Connections closed, AUTHs refused, connects not made or reads paused by a limit"
# counter name -> (metric, help, {label: value}) ; several counters fold into one metric.
_WS_CONNS = "WebSocket connections accepted"
_USER_LOOKUPS = "HA1 lookups in a remote user store, by where the answer came from"
_FAMILIES: dict[str, tuple[str, str, dict[str, str]]] = {
    "frames_in_send": ("frames_in", "MSRP frames received", {"method": "SEND"}),
    "frames_in_report": ("frames_in", "MSRP frames received", {"method": "REPORT"}),
    "frames_in_auth": ("frames_in", "MSRP frames received", {"method": "AUTH"}),
    "frames_in_other": ("frames_in", "MSRP frames received", {"method": "other"}),
    "frames_in_response": ("frames_in", "MSRP frames received", {"method": "response"}),
    "frames_out": ("frames_out", "Frames relayed", {}),
    "replies_2xx": ("replies", "Responses sent by the relay", {"class": "2xx"}),
    "replies_4xx": ("replies", "Responses sent by the relay", {"class": "4xx"}),
    "replies_5xx": ("replies", "Responses sent by the relay", {"class": "5xx"}),
    "bytes_in": ("bytes", "Bytes on MSRP connections", {"direction": "in"}),
    "bytes_out": ("bytes", "Bytes on MSRP connections", {"direction": "out"}),
    "conns_total": ("connections", "MSRP connections opened", {}),
    # Of those, the WebSocket ones (RFC 7977), by listener kind.
    "conns_ws": ("websocket_connections", _WS_CONNS, {"transport": "ws"}),
    "conns_wss": ("websocket_connections", _WS_CONNS, {"transport": "wss"}),
    "handoffs_out": ("handoffs", "Frames handed between workers", {"direction": "out"}),
    "handoffs_in": ("handoffs", "Frames handed between workers", {"direction": "in"}),
    "handoff_gone": ("handoff_gone", "Handoffs whose connection was gone", {}),
    "auth_ok": ("auth", "Digest authentications", {"result": "ok"}),
    "auth_fail": ("auth", "Digest authentications", {"result": "fail"}),
    "relay_fail": ("relay_failures", "Relays that could not be sent", {}),
    "errors": ("errors", "Route and protocol errors", {}),
    "invalid_frames": ("invalid_frames", "Malformed frames answered or refused", {}),
    "conns_passed": ("balanced", "Connections passed between workers at accept", {"dir": "out"}),
    "conns_adopted": ("balanced", "Connections passed between workers at accept", {"dir": "in"}),
    "conns_moved": ("moved", "Connections moved to the worker of their peer", {}),
    "responses_dropped": ("responses_dropped", "Responses with no connection to go back on", {}),
    "connects_out": ("connects", "Outbound connection attempts", {"result": "started"}),
    "connects_failed": ("connects", "Outbound connection attempts", {"result": "failed"}),
    "head_timeouts": ("head_timeouts", "Connections closed for a frame head too slow", {}),
    "loops_refused": ("loops_refused", "Frames refused for looping through this relay", {}),
    "tx_unmatched": ("tx_unmatched", "Responses matching no forwarded transaction", {}),
    "tx_timeouts": ("tx_timeouts", "Forwarded transactions whose next hop never answered", {}),
    "tx_refused": ("tx_refused", "Requests not forwarded: transactions full, or refused 413", {}),
    "tx_hop_closed": ("tx_hop_closed", "Forwarded transactions whose next hop closed first", {}),
    # [limits]: what each limit refused or closed (README, "Abuse limits").
    "limit_addr_conns": ("limited", _LIMITED, {"limit": "max_conns_per_addr"}),
    "limit_unauth_conns": ("limited", _LIMITED, {"limit": "max_unauth_conns"}),
    "limit_banned": ("limited", _LIMITED, {"limit": "banned"}),
    "limit_bans": ("bans", "Source addresses banned for failed AUTHs", {}),
    "limit_probation": ("limited", _LIMITED, {"limit": "probation"}),
    "limit_auth_failures": ("limited", _LIMITED, {"limit": "auth_failures_close"}),
    "limit_user_sessions": ("limited", _LIMITED, {"limit": "max_sessions_per_user"}),
    "limit_outbound": ("limited", _LIMITED, {"limit": "max_outbound_per_second"}),
    "limit_rate": ("limited", _LIMITED, {"limit": "session_rate"}),
    "limit_user_rate": ("limited", _LIMITED, {"limit": "user_rate"}),
    # A PostgreSQL user store ([auth] users, README "Users"): cache hits and database queries.
    "users_cache_hits": ("user_lookups", _USER_LOOKUPS, {"answer": "cache"}),
    "users_db_lookups": ("user_lookups", _USER_LOOKUPS, {"answer": "database"}),
    "users_db_failures": ("user_db_failures", "User database lookups that failed or timed out", {}),
    "users_unavailable": ("user_unavailable", "AUTHs answered 500: the user database was down", {}),
    # The cluster agent's (README, "Running a cluster").
    "cluster_redis_lost": ("cluster_redis_lost", "Times this node lost Redis", {}),
    "cluster_auth_failures": ("cluster_auth_failures", "Failed AUTHs counted in Redis", {}),
    "cluster_bans_out": ("cluster_bans", _CLUSTER_BANS, {"direction": "out"}),
    "cluster_bans_in": ("cluster_bans", _CLUSTER_BANS, {"direction": "in"}),
    "cluster_reports_dropped": (
        "cluster_reports_dropped",
        "Failed AUTHs not counted in Redis (agent queue full)",
        {},
    ),
    "cluster_bad_input": (
        "cluster_bad_input",
        "Pub/sub events and failure reports the cluster agent refused (malformed)",
        {},
    ),
    # The workers' forwarding between nodes (README, "Running a cluster").
    "cluster_forwarded": (
        "cluster_forwarded",
        "Frames forwarded to the node holding their session",
        {},
    ),
    "cluster_lookups": ("cluster_lookups", "Tokens of other nodes asked of the cluster agent", {}),
    "cluster_lookup_failures": (
        "cluster_lookup_failures",
        "Token lookups that failed (Redis down, no answer in time, too many at once)",
        {},
    ),
    "cluster_lookups_refused": (
        "cluster_lookups_refused",
        "Token lookups not asked: the connection's or its address's share used up",
        {},
    ),
}


class ShmCollector:
    """Reads counters, heartbeats and table sizes from shared memory on each scrape."""

    def __init__(
        self, shm: ShmSet, started: float, cluster: Callable[[], bool] = lambda: False
    ) -> None:
        self.shm = shm
        self.started = started
        self.cluster = cluster
        """Whether [cluster] redis is set (a reload may change it): the agent's gauge shows."""

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        open_conns = GaugeMetricFamily(
            "msrpd_connections_open", "Open connections", labels=["worker"]
        )
        for slot, values in self.shm.stats.per_slot().items():
            worker = str(slot)
            open_conns.add_metric([worker], values.get("conns_open", 0))
            for counter, (name, text, labels) in _FAMILIES.items():
                family = families.get(name)
                if family is None:
                    family = CounterMetricFamily(f"msrpd_{name}", text, labels=[*labels, "worker"])
                    families[name] = family
                family.add_metric([*labels.values(), worker], values.get(counter, 0))
        yield from families.values()
        yield open_conns
        yield from self._gauges()

    def _gauges(self) -> Iterator[Metric]:
        workers = GaugeMetricFamily("msrpd_workers", "Worker processes by state", labels=["state"])
        states = [r.state for r in self.shm.heartbeats.live() if r.pid]
        for state in (WorkerState.BOOTING, WorkerState.RUNNING, WorkerState.DRAINING):
            workers.add_metric([state.name.lower()], sum(1 for s in states if s == state))
        yield workers
        yield GaugeMetricFamily(
            "msrpd_sessions", "Sessions in the cmap", value=self.shm.cmap.count()
        )
        yield GaugeMetricFamily(
            "msrpd_uptime_seconds", "Seconds since start", value=time.time() - self.started
        )
        if self.cluster():
            up = self.shm.stats.slot(AGENT_INDEX)["cluster_redis_up"]
            yield GaugeMetricFamily(
                "msrpd_cluster_redis_up", "1 while this node reaches Redis, else 0", value=up
            )
            left_out = self.shm.stats.slot(AGENT_INDEX)["cluster_users_left_out"]
            yield GaugeMetricFamily(
                "msrpd_cluster_users_left_out",
                "Users with sessions on other nodes not in the shared table (counted here alone)",
                value=left_out,
            )


class MetricsServer:
    """A listening socket the supervisor selects on; `on_readable` answers one scrape."""

    def __init__(
        self, listen: str, collector: ShmCollector, now: Callable[[], float] = time.monotonic
    ) -> None:
        host, port = parse_host_port(listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.now = now

    def fileno(self) -> int:
        return self.sock.fileno()

    def on_readable(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        with conn:
            conn.settimeout(DEADLINE)
            with contextlib.suppress(OSError):
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        request = b""
        deadline = self.now() + DEADLINE
        while b"\r\n\r\n" not in request and len(request) < MAX_REQUEST and self.now() < deadline:
            data = conn.recv(MAX_REQUEST)
            if not data:
                break
            request += data
        path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
        if not request.startswith(b"GET ") or path.split(b"?")[0] not in (b"/", b"/metrics"):
            conn.sendall(
                b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            return
        body = generate_latest(self.registry)
        head = (
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        )
        conn.sendall(head + body)

    def close(self) -> None:
        self.sock.close()
