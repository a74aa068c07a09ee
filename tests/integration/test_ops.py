"""Operations against a running msrpd with real traffic: the accounting line, JSON logs,
the Prometheus endpoint, and msrp.session_kill closing the connection it names."""

from __future__ import annotations

import json
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from ..msrpclient import MsrpClient
from .relay import PASSWORDS, REALM, Relay, free_port, wait_for


def _pair(relay: Relay) -> tuple[MsrpClient, MsrpClient]:
    alice, bob = MsrpClient(relay.port), MsrpClient(relay.port)
    for client, user in ((alice, "alice"), (bob, "bob")):
        assert client.auth(user, PASSWORDS[user], REALM).frame.code == 200
    return alice, bob


def test_accounting_line_in_json_logs(make_relay) -> None:
    """1. JSON log lines; 2. Bob's session ends when his connection closes: one msrpd.acct
    record with his user, session id and the exact bytes and frames of his connection."""
    relay: Relay = make_relay(children=1)
    relay.sections["log"] = {"json": True}
    relay.write_config()
    assert relay.start().returncode == 0
    alice, bob = _pair(relay)
    sessid = (bob.use_path or "").rsplit("/", 1)[1].split(";")[0]
    for i in range(3):
        alice.send_message(bob, b"x" * 100, message_id=f"m{i}")
        assert alice.recv().frame.code == 200
        bob.recv()
    bob.close()

    def acct() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in relay.log().splitlines() if line.startswith("{")]
        return [r for r in lines if r["logger"] == "msrpd.acct" and r.get("session") == sessid]

    (record,) = wait_for(acct, 5, "the accounting line")  # type: ignore[misc]
    assert record["user"] == "bob"
    assert record["reason"] == "closed by peer"
    assert record["frames_in"] == 2  # the AUTH without and with credentials
    assert record["frames_out"] == 2 + 3  # 401, 200, three relayed SENDs
    assert (record["bytes_in"], record["bytes_out"]) == (bob.bytes_sent, bob.bytes_received)
    assert isinstance(record["duration"], float)
    alice.close()


def test_metrics_endpoint_counts_the_traffic(make_relay) -> None:
    port = free_port()
    relay: Relay = make_relay(children=2)
    relay.sections["metrics"] = {"listen": f"127.0.0.1:{port}"}
    relay.write_config()
    assert relay.start().returncode == 0
    alice, bob = _pair(relay)
    try:
        _count_the_traffic(port, alice, bob)
    finally:
        alice.close()
        bob.close()


def _count_the_traffic(port: int, alice: MsrpClient, bob: MsrpClient) -> None:
    for i in range(5):
        alice.send_message(bob, b"hello", message_id=f"m{i}")
        assert alice.recv().frame.code == 200
        bob.recv()

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                key = s.name + "".join(
                    f",{k}={v}" for k, v in sorted(s.labels.items()) if k != "worker"
                )
                samples[key] = samples.get(key, 0.0) + s.value
        return samples

    # Each worker publishes its counters about once a second; a loaded machine may take longer.
    wait_for(
        lambda: scrape().get("msrpd_frames_in_total,method=SEND") == 5, 20, "published counters"
    )
    samples = scrape()
    assert samples["msrpd_frames_out_total"] == 5
    assert samples["msrpd_frames_in_total,method=AUTH"] == 4
    assert samples["msrpd_replies_total,class=2xx"] == 5 + 2
    assert samples["msrpd_connections_open"] == 2
    assert samples["msrpd_sessions"] == 2
    assert samples["msrpd_workers,state=running"] == 2
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
