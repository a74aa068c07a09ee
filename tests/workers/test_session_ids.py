"""Session ids the relay issues (workers/sessids.new_session_id)."""

from __future__ import annotations

import re

from msrpd.workers.sessids import new_session_id


def test_session_ids_are_random_url_safe_and_never_look_like_an_option() -> None:
    """RFC 4975 §9 characters, 96 random bits (16 characters), and a letter or digit first:
    `msrpd ctl msrp.session_kill ID` must not take an id for an option (one in 32 random
    ids starts with "-" or "_")."""
    ids = [new_session_id() for _ in range(4000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{15}", sessid) for sessid in ids)
    # Every other character still takes all 64 values: the ids keep their randomness.
    assert {sessid[1] for sessid in ids} >= {"-", "_"}
