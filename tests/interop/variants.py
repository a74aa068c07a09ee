"""Scenarios of reference §15 that no golden file records, built from golden ones.

Strategy: a variant is a golden scenario with one send's template rewritten (or a send
appended), played side by side like the rest. There is no recording to hold Kamailio to, so
only msrpd-against-Kamailio is checked; expected_differences.py lists the variants where
msrpd differs on purpose. Each entry names the reference §15 item or README row it covers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache

from .scenarios import Connect, Scenario, Send, load

__all__ = ["VARIANTS", "load_variant"]


@dataclass(frozen=True)
class Variant:
    base: str
    description: str
    rewrite: dict[int, Callable[[str], str]]  # send number -> template rewrite
    append: tuple[Connect | Send, ...] = ()
    expect: dict[int, dict[str, int]] | None = None  # send number -> items to wait for


def _to_path(edit: Callable[[str], str]) -> Callable[[str], str]:
    def rewrite(template: str) -> str:
        head, _, rest = template.partition("\r\n")
        line, _, tail = rest.partition("\r\n")
        assert line.startswith("To-Path: ")
        return f"{head}\r\n{edit(line)}\r\n{tail}"

    return rewrite


def _as_report(send: str) -> str:
    """The SEND as a REPORT: Status instead of Success-Report, no body."""
    head = send.split("\r\nContent-Type:", maxsplit=1)[0]
    head = head.replace(" SEND\r\n", " REPORT\r\n")
    head = head.replace("Success-Report: no\r\n", "Status: 000 200 OK\r\n")
    end_line = send[send.rindex("\r\n-------") :]
    return head + end_line


def _second_frame(send: str) -> str:
    """The SEND twice in one write, the second with its own transaction id."""
    tid = send.split(" ", 2)[1]
    return send + send.replace(tid, "tw0frame")


def _body(new: str) -> Callable[[str], str]:
    old = "Hello Bob, this is Alice."
    assert len(new) == len(old)
    return lambda template: template.replace(old, new)


_SEND = 4  # send_alice_to_bob: AUTH, AUTH (alice), AUTH, AUTH (bob), then the SEND

VARIANTS: dict[str, Variant] = {
    "from_path_no_space": Variant(
        "send_alice_to_bob",
        "§15.31: 'From-Path:<uri>' without a space in a relayed SEND",
        {_SEND: lambda t: t.replace("From-Path: ", "From-Path:")},
    ),
    "to_path_two_spaces": Variant(
        "send_alice_to_bob",
        "§15.32: two spaces between the To-Path URIs of a SEND",
        {_SEND: _to_path(lambda line: line.replace(";tcp msrp", ";tcp  msrp"))},
    ),
    "to_path_lower_case": Variant(
        "send_alice_to_bob",
        "§15.26: 'to-path' in lower case",
        {_SEND: lambda t: t.replace("\r\nTo-Path:", "\r\nto-path:")},
    ),
    "msrp_lower_case": Variant(
        "send_unknown_session",
        "§15.28: a first line starting with 'msrp' in lower case",
        {0: lambda t: "msrp" + t[len("MSRP") :]},
        expect={0: {}},
    ),
    "message_id_lower_case": Variant(
        "send_alice_to_bob",
        "§15.23: 'message-id' in lower case",
        {_SEND: lambda t: t.replace("Message-ID:", "message-id:")},
    ),
    "continuation_flag_plus": Variant(
        "send_alice_to_bob",
        "§15.22: a chunk with the '+' continuation flag",
        {_SEND: lambda t: re.sub(r"\$\r\n\Z", "+\r\n", t)},
    ),
    "body_holding_an_end_line": Variant(
        "send_alice_to_bob",
        "§15.25: a body holding '-------zzzz$' on a line of its own",
        {_SEND: _body("abcd\r\n-------zzzz$\r\ncdefg")},
    ),
    "two_frames_one_write": Variant(
        "send_alice_to_bob", "§15.24: two SENDs in one write", {_SEND: _second_frame}
    ),
    "report_to_known_session": Variant(
        "send_alice_to_bob",
        "§15.12: a REPORT through the relay to a known session",
        {_SEND: _as_report},
    ),
    "leading_crlf": Variant(
        "send_alice_to_bob",
        "§15.29: CRLF CRLF before a frame",
        {_SEND: lambda t: "\r\n\r\n" + t},
    ),
    "response_without_reason": Variant(
        "client_response_single_hop",
        "§15.17: a response 'MSRP tid 200' without a reason",
        {0: lambda t: t.replace(" 200 OK\r\n", " 200\r\n", 1)},
    ),
    "auth_from_path_two_uris": Variant(
        "auth_no_credentials",
        "§15.8: an AUTH whose From-Path is 'H A' (a previous relay)",
        {0: lambda t: t.replace("From-Path: ", "From-Path: msrp://127.0.0.1:9/hop;tcp ")},
    ),
    "trailing_blanks_after_from_path": Variant(
        "send_unknown_session",
        "§15.33: trailing blanks after the only From-Path URI",
        {0: lambda t: re.sub(r"(From-Path: [^\r\n]*)\r\n", r"\1  \r\n", t, count=1)},
    ),
    "bad_end_line_then_real_one": Variant(
        "malformed_bad_end_line",
        "the silence of malformed_bad_end_line explained: the frame is still open (its body "
        "holds the bad end-line and the probe) until its own end-line comes",
        {},
        (Send("alice", "\r\n-------bel00001$\r\n", {"alice": 1}),),
    ),
    "end_line_without_flag_then_real_one": Variant(
        "malformed_end_line_no_flag",
        "the silence of malformed_end_line_no_flag explained: an end-line without a flag is "
        "body data; the frame ends at its own end-line",
        {},
        (Send("alice", "\r\n-------enf00001$\r\n", {"alice": 1}),),
    ),
    "send_through_a_clients_address": Variant(
        "send_alice_to_bob",
        "issue 12: a SEND whose next hop after the relay is Bob's address (his client URI), "
        "not his session, and that asks for no REPORT",
        {
            _SEND: lambda t: _to_path(lambda line: line + " msrp://127.0.0.1:9/x;tcp")(
                t.replace("Success-Report: no\r\n", "Success-Report: no\r\nFailure-Report: no\r\n")
            )
        },
    ),
    "auth_replayed_on_another_connection": Variant(
        "auth_good",
        "a captured AUTH (same nonce, nc, cnonce, response) replayed from another connection",
        {},
        (Connect("mallory"), Send("mallory", "", {"mallory": 1}, replay_of=1)),
    ),
}


@cache
def load_variant(name: str) -> Scenario:
    variant = VARIANTS[name]
    base = load(variant.base)
    actions: list[Connect | Send] = []
    number = 0
    for action in base.actions:
        rewrite = variant.rewrite.get(number) if isinstance(action, Send) else None
        number += isinstance(action, Send)
        if isinstance(action, Send) and rewrite is not None:
            expect = (variant.expect or {}).get(number - 1, action.expect)
            template = rewrite(action.template)
            actions.append(replace(action, template=template, golden=None, expect=expect))
        else:
            actions.append(action)
    actions.extend(variant.append)
    return replace(base, name=name, description=variant.description, actions=tuple(actions))
