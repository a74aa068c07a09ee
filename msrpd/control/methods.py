"""The control methods: what `msrpd ctl METHOD [PARAMS...]` asks the supervisor.

Rules:
- A method takes the request's params: an array (by position), an object (by name) or none.
  Wrong params raise RpcError(-32602); a number where a text is wanted is taken as its text
  (`msrpd ctl` sends "123" as a number).
- Methods read shared memory, and ask workers over their ctl sockets (workerctl.py) all at
  once with one deadline, WORKER_TIMEOUT: a slow or dead worker shows up as an "error" row
  and holds the supervisor's loop up for that long at most.
- Kamailio's names and fields where Kamailio has the method: core.uptime (now, up_since,
  uptime), msrp.cmaplist (reference/kamailio-msrp.md §8.5; CONLIST is a JSON array of
  {"CONDATA": {...}} where Kamailio's struct repeats the key), system.listMethods.
- With a cluster, what Redis knows is the cluster agent's (its ctl socket): cluster.nodes,
  msrp.cmaplist cluster, msrp.conns cluster (the other nodes' answers, cluster/listconns.py),
  and the kill of a session not held here (cluster/kills.py), each
  holding the supervisor's loop up for the agent's own bound (+0.5 s) at most.
- core.ps keeps one psutil.Process per pid between calls, so cpu is the percentage of one
  CPU used since the previous call (psutil's cpu_percent(None)); the first call reads 0.0.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import psutil

from .. import __version__, hot_build, hot_path
from ..config import Settings
from ..rundir import AGENT_INDEX, agent_ctl_path
from ..shm import COUNTERS, ShmSet
from ..workers.ctl import LOG_LEVELS
from .conns import node_conns
from .rpc import INVALID_PARAMS, Method, RpcError
from .sessions import WORKER_TIMEOUT, condata, kill_session, kill_wait, remote_condata
from .workerctl import WorkerCtlError, query_worker, query_workers

__all__ = ["WORKER_TIMEOUT", "SupervisorView", "WorkerInfo", "build_methods"]

logger = logging.getLogger(__name__)

NO_HTABLE: Final = -32000
NO_CLUSTER: Final = -32001


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    pid: int
    slot: int
    generation: int
    index: int
    """Process slot in the heartbeat and stats tables."""
    state: str
    """"booting", "running" or "draining"."""
    role: str = "worker"


class SupervisorView(Protocol):
    """What the supervisor offers the control methods."""

    @property
    def settings(self) -> Settings: ...

    @property
    def started(self) -> float:
        """time.time() when the supervisor started."""

    @property
    def shm(self) -> ShmSet: ...

    @property
    def supervisor_pid(self) -> int: ...

    @property
    def agent_pid(self) -> int | None: ...

    def workers(self) -> list[WorkerInfo]: ...

    def request_reload(self) -> None: ...

    def request_shutdown(self) -> None: ...

    def worker_ctl_paths(self) -> list[tuple[WorkerInfo, Path]]: ...


def build_methods(view: SupervisorView) -> dict[str, Method]:
    """The method table for rpc.dispatcher()."""
    return _Methods(view).table()


def _args(params: Any, names: tuple[str, ...], required: int, usage: str) -> list[Any]:
    """Positional values for `names` from array or object params (missing ones None)."""
    if params is None:
        params = []
    if isinstance(params, dict):
        extra = sorted(set(params) - set(names))
        if extra:
            raise RpcError(INVALID_PARAMS, f"unknown params {extra}; usage: {usage}")
        values = [params.get(name) for name in names]
    elif isinstance(params, list) and len(params) <= len(names):
        values = [*params, *[None] * (len(names) - len(params))]
    else:
        raise RpcError(INVALID_PARAMS, f"too many params; usage: {usage}")
    if any(value is None for value in values[:required]):
        raise RpcError(INVALID_PARAMS, f"missing params; usage: {usage}")
    return values


def _text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise RpcError(INVALID_PARAMS, f"{what} must be a string")


def _who(info: WorkerInfo) -> dict[str, Any]:
    return {"slot": info.slot, "generation": info.generation, "pid": info.pid}


class _Methods:
    def __init__(self, view: SupervisorView) -> None:
        self.view = view
        self.procs: dict[int, psutil.Process] = {}

    def table(self) -> dict[str, Method]:
        return {
            "core.version": self.version,
            "core.uptime": self.uptime,
            "core.ps": self.ps,
            "core.reload": self.reload,
            "core.shutdown": self.shutdown,
            "stats.get": self.stats_get,
            "stats.reset": self.stats_reset,
            "msrp.cmaplist": self.cmaplist,
            "msrp.conns": self.conns,
            "msrp.session_kill": self.session_kill,
            "htable.dump": self.htable_dump,
            "log.level": self.log_level,
            "cluster.nodes": self.cluster_nodes,
            "system.listMethods": self.list_methods,
        }

    def list_methods(self, params: Any) -> list[str]:
        _args(params, (), 0, "system.listMethods")
        return sorted(self.table())

    # -- core -------------------------------------------------------------------------------

    def version(self, params: Any) -> dict[str, Any]:
        _args(params, (), 0, "core.version")
        return {
            "name": "msrpd",
            "version": __version__,
            "python": platform.python_version(),
            "hot_path": hot_path(),
            "hot_build": hot_build(),
        }

    def uptime(self, params: Any) -> dict[str, Any]:
        _args(params, (), 0, "core.uptime")
        now, since = time.time(), self.view.started
        return {"now": time.ctime(now), "up_since": time.ctime(since), "uptime": int(now - since)}

    def ps(self, params: Any) -> list[dict[str, Any]]:
        _args(params, (), 0, "core.ps")
        view = self.view
        rows = [self._proc(view.supervisor_pid, "supervisor", None, None, "running", None)]
        for info in view.workers():
            beat = view.shm.heartbeats.read(info.index)
            conns = beat.conns if beat.pid == info.pid else None
            rows.append(
                self._proc(info.pid, info.role, info.slot, info.generation, info.state, conns)
            )
        if view.settings.cluster.redis is not None:
            rows.append(self._agent_row())
        live = {row["pid"] for row in rows}
        for pid in [pid for pid in self.procs if pid not in live]:
            del self.procs[pid]
        return rows

    def _proc(
        self, pid: int, role: str, slot: int | None, gen: int | None, state: str, conns: int | None
    ) -> dict[str, Any]:
        cpu, rss = self._usage(pid)
        return {
            "pid": pid,
            "role": role,
            "slot": slot,
            "generation": gen,
            "state": state,
            "cpu": cpu,
            "rss": rss,
            "conns": conns,
        }

    def _agent_row(self) -> dict[str, Any]:
        """The cluster agent, its state what it says of Redis (cluster/status.py)."""
        pid = self.view.agent_pid
        if pid is None:
            return {"pid": None, "role": "cluster", "state": "respawning", "redis": "unknown"}
        up = self.view.shm.stats.slot(AGENT_INDEX)["cluster_redis_up"]
        row = self._proc(pid, "cluster", None, None, "running", None)
        return {**row, "redis": "up" if up else "down"}

    def _usage(self, pid: int) -> tuple[float | None, int | None]:
        try:
            proc = self.procs.get(pid)
            if proc is None or not proc.is_running():  # is_running also catches a reused pid
                proc = self.procs[pid] = psutil.Process(pid)
            with proc.oneshot():
                return round(proc.cpu_percent(None), 1), proc.memory_info().rss
        except psutil.Error:
            self.procs.pop(pid, None)
            return None, None

    def reload(self, params: Any) -> dict[str, Any]:
        _args(params, (), 0, "core.reload")
        self.view.request_reload()
        return {"reload": "requested"}

    def shutdown(self, params: Any) -> dict[str, Any]:
        _args(params, (), 0, "core.shutdown")
        self.view.request_shutdown()
        return {"shutdown": "requested"}

    # -- stats ------------------------------------------------------------------------------

    def stats_get(self, params: Any) -> dict[str, Any]:
        (group,) = _args(params, ("group",), 0, "stats.get [GROUP]")
        prefix = "" if group is None else _text(group, "group")
        names = [name for name in COUNTERS if name.startswith(prefix)]
        if not names:
            raise RpcError(INVALID_PARAMS, f"no counter starts with {prefix!r}")
        stats = self.view.shm.stats
        total, per_slot = stats.total(), stats.per_slot()
        workers = []
        for info in self.view.workers():
            counters = per_slot.get(info.index, {})
            workers.append({**_who(info), **{name: counters.get(name, 0) for name in names}})
        return {"total": {name: total[name] for name in names}, "workers": workers}

    def stats_reset(self, params: Any) -> dict[str, Any]:
        _args(params, (), 0, "stats.reset")
        self.view.shm.stats.reset()
        return {"reset": True}

    # -- msrp -------------------------------------------------------------------------------

    def cmaplist(self, params: Any) -> dict[str, Any]:
        (everywhere,) = _args(params, ("cluster",), 0, "msrp.cmaplist [cluster]")
        cmap = self.view.shm.cmap
        rows = [condata(entry) for entry in cmap.entries()]
        if everywhere is not None:
            if not (everywhere is True or everywhere == "cluster"):
                raise RpcError(INVALID_PARAMS, "usage: msrp.cmaplist [cluster]")
            here = self.view.settings.cluster.node
            rows = [{**row, "NODE": here} for row in rows]
            others = self._agent("cluster.sessions", None, self.view.settings.cluster.timeout)
            rows.extend(remote_condata(row) for row in others)
        return {
            "MAP_SIZE": cmap.n_stripes,
            "CONLIST": [{"CONDATA": row} for row in rows],
            "CONCOUNT": len(rows),
        }

    def conns(self, params: Any) -> list[dict[str, Any]]:
        (everywhere,) = _args(params, ("cluster",), 0, "msrp.conns [cluster]")
        if not (everywhere is None or everywhere is True or everywhere == "cluster"):
            raise RpcError(INVALID_PARAMS, "usage: msrp.conns [cluster]")
        rows = node_conns([(_who(info), path) for info, path in self.view.worker_ctl_paths()])
        if everywhere is None:
            return rows
        cluster = self.view.settings.cluster
        here = [{**row, "node": cluster.node} for row in rows]
        # The other nodes answer over Redis within a kill's bound (cluster/listconns.py).
        others = self._agent("cluster.conns", None, kill_wait(cluster.timeout))
        return sorted([*here, *others], key=lambda row: str(row["node"]))

    def session_kill(self, params: Any) -> dict[str, Any]:
        """Here when this node holds the session; else, with a cluster, on the node the
        directory names (cluster/kills.py): its answer within kill_wait(), or an error."""
        (sessid,) = _args(params, ("sessid",), 1, "msrp.session_kill SESSID")
        sessid = _text(sessid, "sessid")
        paths = {(i.slot, i.generation): path for i, path in self.view.worker_ctl_paths()}
        done = kill_session(self.view.shm.cmap, sessid, lambda slot, gen: paths.get((slot, gen)))
        cluster = self.view.settings.cluster
        if cluster.redis is None:
            return done
        if "conid" in done:  # held here, even if a close deleted the entry first
            return {**done, "node": cluster.node}
        return dict(self._agent("cluster.kill", {"sessid": sessid}, kill_wait(cluster.timeout)))

    def htable_dump(self, params: Any) -> Any:
        (name,) = _args(params, ("name",), 1, "htable.dump NAME")
        name = _text(name, "name")
        htable = getattr(self.view.shm, "htable", None)
        if not callable(getattr(htable, "dump", None)):
            raise RpcError(NO_HTABLE, "no htable")
        assert htable is not None
        try:
            return htable.dump(name, time.time())
        except KeyError:
            tables = ", ".join(sorted(getattr(htable, "tables", ())))
            raise RpcError(INVALID_PARAMS, f"no htable named {name!r} (tables: {tables})") from None

    # -- cluster ----------------------------------------------------------------------------

    def cluster_nodes(self, params: Any) -> Any:
        _args(params, (), 0, "cluster.nodes")
        return self._agent("cluster.nodes", None, self.view.settings.cluster.timeout)

    def _agent(self, method: str, params: dict[str, Any] | None, wait: float) -> Any:
        """Ask the cluster agent; it answers within `wait` (its own bound), or is an error."""
        settings = self.view.settings
        if settings.cluster.redis is None:
            raise RpcError(NO_CLUSTER, "no cluster: [cluster] redis is not set")
        path = agent_ctl_path(settings.core.run_dir)
        try:
            return query_worker(path, method, params, wait + 0.5)
        except WorkerCtlError as exc:
            raise RpcError(NO_CLUSTER, f"cluster agent: {exc}") from None

    # -- logging ----------------------------------------------------------------------------

    def log_level(self, params: Any) -> dict[str, Any]:
        (level,) = _args(params, ("level",), 0, f"log.level [{'|'.join(LOG_LEVELS)}]")
        root = logging.getLogger()
        ask: dict[str, Any] = {}
        if level is not None:
            level = _text(level, "level").lower()
            if level not in LOG_LEVELS:
                raise RpcError(INVALID_PARAMS, f"level must be one of {', '.join(LOG_LEVELS)}")
            root.setLevel(level.upper())
            ask = {"level": level}
            logger.info("log level set to %s", level)
        workers = []
        for info, answer in self._ask_all("log.level", ask):
            key = "error" if isinstance(answer, WorkerCtlError) else "level"
            workers.append({**_who(info), key: str(answer)})
        current = logging.getLevelName(root.getEffectiveLevel()).lower()
        return {"supervisor": current, "workers": workers}

    def _ask_all(self, method: str, params: dict[str, Any]) -> list[tuple[WorkerInfo, Any]]:
        targets = self.view.worker_ctl_paths()
        answers = query_workers([(path, method, params) for _, path in targets], WORKER_TIMEOUT)
        return [(info, answer) for (info, _), answer in zip(targets, answers, strict=True)]
