"""A frame the route answered 200 and then could not relay never vanishes silently (issue 12,
item 11): it is logged, counted (relay_fail), and its sender gets a failure REPORT when it
asked for one (RFC 4976 §6.4.1; rfc-checklist §2.4: "relay cannot deliver after it
responded"). Failure-Report: no gets the 200 and nothing else (RFC 4975 §7.1.4)."""

from __future__ import annotations

import time

import pytest

from msrpd.protocol.writer import build_request
from msrpd.rundir import layout_for

from ..msrpclient import MsrpClient, new_tid
from .relay import Relay
from .test_balance import COUNTERS_PUBLISHED

# Answers 200 first (as the cmap route does), then relays with flag 1: reuse a connection
# only, and there is none to the next hop, so relay() fails.
ROUTE = """
def ksr_msrp_event(msrp):
    if msrp.method == "SEND":
        msrp.reply("200", "OK")
        msrp.relay_flags(1)
        msrp.relay()
"""


def test_a_send_answered_200_that_cannot_be_relayed_is_reported(make_relay, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "route.py"
    script.write_text(ROUTE)
    relay: Relay = make_relay(children=1, msrp={"route": str(script)})
    result = relay.start()
    assert result.returncode == 0, result.stderr + relay.log()
    shm = layout_for(relay.settings()).attach_all()
    try:
        with MsrpClient(relay.port, timeout=10) as alice:
            path = [alice.relay_uri, "msrp://127.0.0.1:9/bob;tcp"]
            headers = [
                ("Message-ID", "m1"),
                ("Byte-Range", "1-5/5"),
                ("Content-Type", "text/plain"),
            ]
            tid = new_tid()
            alice.send_raw(build_request(tid, b"SEND", path, [alice.uri], headers, b"hello"))
            ok, report = alice.recv().frame, alice.recv().frame
            assert (ok.tid, ok.code) == (tid, 200)
            assert report.method == b"REPORT"
            assert report.header("Status") == b"000 408 Not Delivered"
            assert (report.message_id, report.to_path) == (b"m1", [alice.uri])
            assert report.header("Byte-Range") == b"1-5/5"
            # Failure-Report: no: the 200 (the route's), and no REPORT.
            quiet = [*headers[:1], ("Failure-Report", "no"), *headers[1:]]
            tid = new_tid()
            alice.send_raw(build_request(tid, b"SEND", path, [alice.uri], quiet, b"hello"))
            assert alice.recv().frame.code == 200
            alice.sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                alice.sock.recv(1)
        time.sleep(COUNTERS_PUBLISHED)
        assert int(shm.stats.total()["relay_fail"]) == 2
        assert relay.log().count("flag 1 forbids opening one") == 2
    finally:
        shm.close()
