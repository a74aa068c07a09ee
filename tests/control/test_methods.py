"""Every control method, through the fifo, over real shm and real worker processes.

1. Shared memory is created as the supervisor creates it, with cmap entries saved in it.
2. Two fake workers are forked: they attach the shm, beat, publish counters and serve their
   ctl sockets with worker_handlers() over fake connections.
3. A ControlServer over build_methods(FakeView) runs in a select loop; msrpd.control.client.call
   asks it.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from msrpd import __version__
from msrpd.config import Settings
from msrpd.control.client import call
from msrpd.control.methods import SupervisorView, build_methods
from msrpd.control.rpc import INVALID_PARAMS, METHOD_NOT_FOUND, RpcError, dispatcher
from msrpd.shm import CmapEntry, ShmLayout, ShmSet
from msrpd.workers.handoff import make_conid

from ..forking import Children
from .conftest import (
    FakeView,
    FakeWorker,
    ServerLoop,
    start_workers,
    worker_specs,
)

STARTED = time.time() - 3600.5


@dataclass
class Cluster:
    view: FakeView
    settings: Settings
    workers: list[FakeWorker]

    def call(self, method: str, *params: Any) -> Any:
        return call(self.settings, method, list(params) or None, 5.0)


@pytest.fixture
def cluster(
    children: Children,
    layout: ShmLayout,
    shm: ShmSet,
    settings: Settings,
    short_dir: Path,
    serve: Callable[..., ServerLoop],
) -> Iterator[Cluster]:
    workers = start_workers(children, layout, shm, worker_specs(short_dir))  # before threads
    now = time.time()
    for worker in workers:
        slot, gen = worker.info.slot, worker.info.generation
        for serial, sessid in enumerate(worker.sessions, start=1):
            addr = f"msrp://192.0.2.{slot + 1}:{40000 + serial}"
            entry = CmapEntry(
                sessid, make_conid(slot, gen, serial), f"{addr}/peer;tcp", addr, "tcp:x", now + 600
            )
            assert shm.cmap.save(entry)
    expired = CmapEntry("sess-old", make_conid(1, 1, 99), "p", "msrp://h:1", "tcp:x", now - 10)
    assert shm.cmap.save(expired)
    view = FakeView(settings, shm, STARTED, os.getpid(), workers)
    serve(dispatcher(build_methods(view)))
    deadline = time.monotonic() + 5
    while any(shm.heartbeats.read(w.info.index).conns != len(w.sessions) for w in workers):
        assert time.monotonic() < deadline, "workers did not beat"
        time.sleep(0.01)
    yield Cluster(view, settings, workers)


def test_fake_view_is_a_supervisor_view(cluster: Cluster) -> None:
    view: SupervisorView = cluster.view  # mypy checks the Protocol here
    assert view.supervisor_pid == os.getpid()


def test_core_version_uptime_and_list_methods(cluster: Cluster) -> None:
    assert cluster.call("core.version")["version"] == __version__
    uptime = cluster.call("core.uptime")
    # STARTED is set when the module is imported, maybe minutes before this test runs.
    assert abs(uptime["uptime"] - (time.time() - STARTED)) <= 2
    assert uptime["uptime"] >= 3600
    assert uptime["up_since"] == time.ctime(STARTED) and len(uptime["now"]) == 24
    names = cluster.call("system.listMethods")
    assert "msrp.cmaplist" in names and names == sorted(names)
    with pytest.raises(RpcError) as info:
        cluster.call("core.uptime", "extra")
    assert info.value.code == INVALID_PARAMS
    with pytest.raises(RpcError) as info:
        cluster.call("core.nothing")
    assert info.value.code == METHOD_NOT_FOUND


def test_core_ps_lists_supervisor_and_workers_with_psutil_figures(cluster: Cluster) -> None:
    rows = cluster.call("core.ps")
    assert [r["role"] for r in rows] == ["supervisor", "worker", "worker"]
    assert rows[0]["pid"] == os.getpid() and rows[0]["slot"] is None
    for row, worker in zip(rows[1:], cluster.workers, strict=True):
        assert row["pid"] == worker.info.pid
        assert (row["slot"], row["generation"], row["state"]) == (worker.info.slot, 1, "running")
        assert row["conns"] == len(worker.sessions)
        assert row["rss"] > 1_000_000
    # The "supervisor" (this process) burns 0.3 s of CPU, however long that takes on a busy
    # machine; its share of the interval is what core.ps must report.
    wall0, cpu0 = time.monotonic(), time.process_time()
    while time.process_time() < cpu0 + 0.3:
        pass
    again = cluster.call("core.ps")
    share = 100 * (time.process_time() - cpu0) / (time.monotonic() - wall0)
    assert all(isinstance(r["cpu"], float) and 0.0 <= r["cpu"] <= 400.0 for r in again)
    # Measured since the previous call, on the Process kept from it (a fresh one says 0.0).
    assert again[0]["cpu"] > share / 2, (again[0]["cpu"], share)


def test_stats_get_sums_and_splits_per_worker_and_filters_by_group(cluster: Cluster) -> None:
    stats = cluster.call("stats.get")
    assert stats["total"]["frames_in_send"] == 7 and stats["total"]["bytes_in"] == 1024
    assert stats["total"]["conns_open"] == 3
    per = {w["slot"]: w for w in stats["workers"]}
    assert per[0]["frames_out"] == 7 and per[1]["frames_out"] == 1
    assert per[1]["pid"] == cluster.workers[1].info.pid
    frames = cluster.call("stats.get", "frames")
    assert set(frames["total"]) == {
        "frames_in_send",
        "frames_in_report",
        "frames_in_auth",
        "frames_in_other",
        "frames_in_response",
        "frames_out",
    }
    replies = cluster.call("stats.get", "replies")
    assert replies["total"] == {"replies_2xx": 3, "replies_4xx": 1, "replies_5xx": 0}
    with pytest.raises(RpcError, match="no counter starts with 'nothing'"):
        cluster.call("stats.get", "nothing")


def test_stats_reset(cluster: Cluster) -> None:
    assert cluster.call("stats.reset") == {"reset": True}
    total = cluster.call("stats.get")["total"]
    assert total["frames_in_send"] == 0 and total["conns_open"] == 3  # gauges stay


def test_msrp_cmaplist_has_kamailios_fields(cluster: Cluster) -> None:
    out = cluster.call("msrp.cmaplist")
    assert list(out) == ["MAP_SIZE", "CONLIST", "CONCOUNT"]
    assert out["MAP_SIZE"] == 4 and out["CONCOUNT"] == 4 == len(out["CONLIST"])
    rows = {item["CONDATA"]["SESSIONID"]: item["CONDATA"] for item in out["CONLIST"]}
    a0 = rows["sess-a0"]
    assert list(a0) == [
        "CITEMID",
        "SESSIONID",
        "PEER",
        "ADDR",
        "SOCK",
        "EXPIRES",
        "CONID",
        "FLAGS",
    ]
    assert a0["CITEMID"] == zlib.crc32(b"sess-a0")
    assert a0["ADDR"] == "msrp://192.0.2.1:40001" and a0["SOCK"] == "tcp:x"
    assert a0["CONID"] == make_conid(0, 1, 1) and a0["FLAGS"] == 0
    assert len(a0["EXPIRES"]) == 24
    assert "sess-old" in rows  # expired, not swept yet: shown, as Kamailio does


def test_msrp_cmaplist_cluster_needs_a_cluster_and_takes_only_that_word(cluster: Cluster) -> None:
    with pytest.raises(RpcError) as info:
        cluster.call("msrp.cmaplist", "cluster")
    assert info.value.code == -32001 and "no cluster" in info.value.message
    for param in ("everything", 1, 0):  # 1 is not true: only the word, or JSON true
        with pytest.raises(RpcError) as info:
            cluster.call("msrp.cmaplist", param)
        assert info.value.code == INVALID_PARAMS


def test_msrp_conns_cluster_needs_a_cluster_and_takes_only_that_word(cluster: Cluster) -> None:
    with pytest.raises(RpcError) as info:
        cluster.call("msrp.conns", "cluster")
    assert info.value.code == -32001 and "no cluster" in info.value.message
    for param in ("everything", 1, 0):
        with pytest.raises(RpcError) as info:
            cluster.call("msrp.conns", param)
        assert info.value.code == INVALID_PARAMS and "msrp.conns [cluster]" in info.value.message


def test_msrp_conns_asks_every_worker(cluster: Cluster) -> None:
    rows = cluster.call("msrp.conns")
    assert len(rows) == 3
    by_sess = {r["sessions"][0]: r for r in rows}
    b0 = by_sess["sess-b0"]
    assert (b0["slot"], b0["generation"], b0["pid"]) == (1, 1, cluster.workers[1].info.pid)
    assert b0["conid"] == f"{make_conid(1, 1, 1):x}"
    assert b0["peer"] == "tcp:192.0.2.2:40001" and b0["local"] == "tcp:127.0.0.1:2855"
    assert b0["bytes_in"] == 100 and b0["bytes_out"] == 200 and b0["age"] >= 5.0


def test_msrp_conns_reports_a_dead_worker_as_an_error_row(
    cluster: Cluster, children: Children
) -> None:
    children.kill(cluster.workers[1].info.pid)
    t0 = time.monotonic()
    rows = cluster.call("msrp.conns")
    assert time.monotonic() - t0 < 2.0
    errors = [r for r in rows if "error" in r]
    assert len(errors) == 1 and errors[0]["slot"] == 1
    assert len(rows) == 3  # worker 0's two connections, then the error row


def test_msrp_session_kill_deletes_the_entry_and_closes_the_owners_connection(
    cluster: Cluster, shm: ShmSet
) -> None:
    out = cluster.call("msrp.session_kill", "sess-b0")
    assert out == {"killed": True, "conid": f"{make_conid(1, 1, 1):x}", "closed": True}
    assert shm.cmap.lookup("sess-b0", 0.0) is None
    assert all(r["sessions"] != ["sess-b0"] for r in cluster.call("msrp.conns"))
    assert cluster.call("msrp.session_kill", "sess-b0") == {"killed": False}
    assert cluster.call("msrp.session_kill", "no-such-session") == {"killed": False}
    with pytest.raises(RpcError) as info:
        cluster.call("msrp.session_kill")
    assert info.value.code == INVALID_PARAMS


def test_msrp_session_kill_of_a_session_whose_worker_is_gone(cluster: Cluster) -> None:
    out = cluster.call("msrp.session_kill", "sess-old")  # owner (1, 1) serial 99: no such conn
    assert out["killed"] is True and out["closed"] is False


def test_msrp_session_kill_takes_a_numeric_session_id_as_text(
    cluster: Cluster, shm: ShmSet
) -> None:
    entry = CmapEntry("12345", make_conid(0, 1, 1), "p", "msrp://h:1", "tcp:x", time.time() + 60)
    assert shm.cmap.save(entry)
    assert cluster.call("msrp.session_kill", 12345)["killed"] is True


def test_htable_dump_lists_the_live_items_of_a_shared_table(cluster: Cluster, shm: ShmSet) -> None:
    now = time.time()
    assert shm.htable.set("msrp", "alice", "sess-a0", now)
    assert shm.htable.set("msrp", "count", 7, now, expires_in=0)
    assert shm.htable.set("msrp", "gone", "x", now - 100, expires_in=10)
    items = cluster.call("htable.dump", "msrp")
    assert [(i["key"], i["value"], i["type"]) for i in items] == [
        ("alice", "sess-a0", "str"),
        ("count", 7, "int"),
    ]
    assert items[1]["expires"] == 0 and items[0]["expires"] > now
    with pytest.raises(RpcError, match=r"no htable named 'nope' \(tables: (.*, )?msrp") as info:
        cluster.call("htable.dump", "nope")
    assert info.value.code == INVALID_PARAMS


def test_htable_dump_without_an_htable(cluster: Cluster) -> None:
    @dataclass
    class ShmWithoutHtable:
        cmap: object = None

    cluster.view.shm = ShmWithoutHtable()  # type: ignore[assignment]
    with pytest.raises(RpcError) as info:
        cluster.call("htable.dump", "msrp")
    assert (info.value.code, info.value.message) == (-32000, "no htable")


def test_core_reload_and_shutdown_ask_the_supervisor(cluster: Cluster) -> None:
    assert cluster.call("core.reload") == {"reload": "requested"}
    assert cluster.call("core.shutdown") == {"shutdown": "requested"}
    assert (cluster.view.reloads, cluster.view.shutdowns) == (1, 1)


def test_log_level_is_applied_in_every_worker_process(cluster: Cluster) -> None:
    root = logging.getLogger()
    before = root.level
    try:
        out = cluster.call("log.level", "debug")
        assert out["supervisor"] == "debug" and root.level == logging.DEBUG
        assert [w["level"] for w in out["workers"]] == ["debug", "debug"]
        root.setLevel(logging.WARNING)  # only here: the workers keep theirs
        read_back = cluster.call("log.level")
        assert read_back["supervisor"] == "warning"
        assert [w["level"] for w in read_back["workers"]] == ["debug", "debug"]
        assert cluster.call("log.level", "ERROR")["workers"][0]["level"] == "error"
        with pytest.raises(RpcError, match="one of debug, info, warning, error"):
            cluster.call("log.level", "loud")
    finally:
        root.setLevel(before)
