"""Where msrpd differs from Kamailio 5.6.3 on purpose, scenario by scenario.

Every scenario not listed here must give msrpd exactly Kamailio's normalised transcript (after
the GLOBAL rules). For a listed one, `steps` pins msrpd's own outcome of each step that
differs, byte for byte after normalisation (steps count the scenario's sends from 0; None
means msrpd does not play the step because it has closed that connection where Kamailio kept
it open); every other step must still match Kamailio's. `kamailio` and `msrpd` say what each
does, `why` gives the reason (a Kamailio bug from the reference, an RFC rule, DESIGN §1/§8).
What Kamailio does is held to the golden file by test_parity.py (golden scenarios only).

Frames are written as text with <placeholders>; `frame()` joins lines with CRLF and turns the
UTF-8 text into one code point per byte, as transcripts hold it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["DIFFERENCES", "GLOBAL", "Difference", "Item", "Rule", "frame"]

#: One expected item: exact normalised text, or a pattern (only for a behaviour the README
#: promises and msrpd does not have yet: there are no bytes to pin).
Item = str | re.Pattern[str]
Outcome = dict[str, list[Item]]


def frame(*lines: str) -> str:
    return "\r\n".join(lines).encode("utf-8").decode("latin-1") + "\r\n"


@dataclass(frozen=True)
class Difference:
    kamailio: str
    msrpd: str
    why: str
    steps: dict[int, Outcome | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """A difference wherever its frame occurs, in every scenario."""

    what: str
    kamailio: str
    msrpd: str
    why: str
    apply: Callable[[str], str]


_CHALLENGE = re.compile(r'^(WWW-Authenticate: Digest realm="[^"]*", nonce="[^"]*", )(qop=)', re.M)

GLOBAL = (
    Rule(
        what="every 401 challenge",
        kamailio='WWW-Authenticate: Digest realm="myrealm", nonce="…", qop="auth"',
        msrpd='the same with opaque="<24 hex>" before qop (normalised to <OPAQUE>)',
        why="RFC 2617 §3.2.1 opaque, an HMAC of the run's secret so every worker gives the "
        "same one (msrpd/routing/auth.py); a client that leaves it out is accepted",
        apply=lambda item: _CHALLENGE.sub(r'\1opaque="<OPAQUE>", \2', item),
    ),
)

A = "msrp://127.0.0.1:<PORT:alice>/alicesess;tcp"
B = "msrp://127.0.0.1:<PORT:bob>/bobsess;tcp"
R = "msrp://127.0.0.1:<PORT:RELAY>;tcp"
RB = "msrp://127.0.0.1:<PORT:RELAY>/<SID1>;tcp"  # Bob's session when only Bob AUTHs
RB2 = "msrp://127.0.0.1:<PORT:RELAY>/<SID2>;tcp"  # Bob's session when Alice AUTHs first
NOSUCH = "msrp://127.0.0.1:<PORT:RELAY>/nosuchsession;tcp"
PROBE_481 = frame(
    "MSRP <TID2> 481 Session-does-not-exist",
    f"To-Path: {A}",
    "From-Path: msrp://127.0.0.1:<PORT:RELAY>/no-such-session;tcp",
    "Message-ID: probe",
    "-------<TID2>$",
)
_SEND = 4  # send_alice_to_bob: AUTH, AUTH (alice), AUTH, AUTH (bob), then the SEND
HELLO = (
    "Success-Report: no",
    "Byte-Range: 1-25/25",
    "Content-Type: text/plain",
    "",
    "Hello Bob, this is Alice.",
    "-------<TID5>$",
)


def _challenge(tid: str, to: str, nonce: str, stale: bool = False) -> str:
    flag = "stale=true, " if stale else ""
    return frame(
        f"MSRP {tid} 401 Unauthorized",
        f"To-Path: {to}",
        f"From-Path: {R}",
        f'WWW-Authenticate: Digest realm="myrealm", nonce="{nonce}", opaque="<OPAQUE>", '
        f'{flag}qop="auth"',
        f"-------{tid}$",
    )


def _auth_answer(*lines: str) -> dict[int, Outcome | None]:
    """msrpd's answer to the second (authenticated) AUTH of an auth_* scenario."""
    return {1: {"alice": [frame(lines[0], f"To-Path: {A}", f"From-Path: {R}", *lines[1:])]}}


def _big_frame_relayed() -> dict[int, Outcome | None]:
    return {
        2: {
            "alice": [
                frame(
                    "MSRP <TID3> 200 OK",
                    f"To-Path: {A}",
                    f"From-Path: {RB}",
                    "Message-ID: big",
                    "-------<TID3>$",
                ),
            ],
            "bob": [
                frame(
                    "MSRP <TID3> SEND",
                    f"To-Path: {B}",
                    f"From-Path: {RB} {A}",
                    "Message-ID: big",
                    "Byte-Range: <RANGE1>",
                    "Content-Type: text/plain",
                    "",
                    "<BODY1>",
                    "-------<TID3>$",
                ),
            ],
        }
    }


def _refused_malformed(reason: str) -> dict[int, Outcome | None]:
    return {
        0: {
            "alice": [
                frame(
                    f"MSRP <TID1> 400 Bad Request ({reason})",
                    "To-Path: msrp://127.0.0.1:9/alicesess;tcp",
                    f"From-Path: {NOSUCH}",
                    "-------<TID1>$",
                ),
            ]
        },
        1: {"alice": [PROBE_481]},
    }


def _send_relayed(from_path: str = "From-Path: ") -> dict[int, Outcome | None]:
    """msrpd's outcome of send_alice_to_bob's SEND (200 to Alice, relayed to Bob)."""
    return {
        4: {
            "alice": [
                frame(
                    "MSRP <TID5> 200 OK",
                    f"To-Path: {A}",
                    f"From-Path: {RB2}",
                    "Message-ID: msg-1",
                    "-------<TID5>$",
                ),
            ],
            "bob": [
                frame(
                    "MSRP <TID5> SEND",
                    f"To-Path: {B}",
                    f"{from_path}{RB2} {A}",
                    "Message-ID: msg-1",
                    *HELLO,
                ),
            ],
        }
    }


_423 = "423 Interval Out-of-Bounds"  # Kamailio writes "Interval Out Of Bounds"
_NO_SIZE_LIMIT = (
    "no frame-size ceiling: DESIGN §1 and issue 5 ('frames of any size'); reference §0.4 "
    "explains Kamailio's 11,239-byte fake-SIP buffer and 16,384-byte TCP read buffer"
)
_MALFORMED = (
    "DESIGN §8: a malformed frame with a readable transaction id gets a 400 and the "
    "connection goes on; Kamailio closes silently (reference §0.5, §15.26)"
)

DIFFERENCES: dict[str, Difference] = {
    # ---- golden scenarios (tests/fixtures/golden/cmap) ----
    "auth_digest_uri_mismatch": Difference(
        kamailio="200 OK: the auth module never compares the digest uri with the To-Path",
        msrpd="401 with a fresh challenge",
        why="RFC 4976 §9.1: the digest uri names the relay's URI; a digest computed for "
        "another uri is refused (msrpd/routing/auth.py; reference §12.3)",
        steps={1: {"alice": [_challenge("<TID2>", A, "<NONCE2>")]}},
    ),
    "auth_expires_invalid": Difference(
        kamailio="200 OK with Expires: 3600 (a non-numeric Expires is ignored)",
        msrpd="400 Bad Request (Expires is not a number), no session",
        why="RFC 4976 §7: Expires = 1*DIGIT; msrpd/routing/cmapops.py grant_expires",
        steps=_auth_answer(
            "MSRP <TID2> 400 Bad Request (Expires is not a number)", "-------<TID2>$"
        ),
    ),
    "auth_expires_too_large": Difference(
        kamailio="423 Interval Out Of Bounds with 17 bytes of stack memory where the header "
        "belongs (the end-line is not at a line start)",
        msrpd=f"{_423} with Max-Expires: 3600",
        why="RFC 4976 §4.6: a 423 names the bound, and its reason is RFC 4975 §10.7's; "
        "Kamailio 5.6.3 bug (reference §0.1, fixed in 6.1); README table",
        steps=_auth_answer(f"MSRP <TID2> {_423}", "Max-Expires: 3600", "-------<TID2>$"),
    ),
    "auth_expires_too_small": Difference(
        kamailio="423 Interval Out Of Bounds with 17 bytes of stack memory (they held the "
        "password xyz123)",
        msrpd=f"{_423} with Min-Expires: 60",
        why="RFC 4976 §4.6, RFC 4975 §10.7; Kamailio 5.6.3 bug (reference §0.1); README table",
        steps=_auth_answer(f"MSRP <TID2> {_423}", "Min-Expires: 60", "-------<TID2>$"),
    ),
    "auth_expires_within_bounds": Difference(
        kamailio="423 Interval Out Of Bounds with stack memory: with Authorization present, "
        "Expires is read from the wrong header and is always 0",
        msrpd="200 OK granting Expires: 1900",
        why="RFC 4976 §5.1/§6.3: an acceptable Expires is granted; Kamailio's "
        "msrp_frame_get_expires bug (reference §0.1, still on master)",
        steps=_auth_answer(
            "MSRP <TID2> 200 OK", f"Use-Path: {RB}", "Expires: 1900", "-------<TID2>$"
        ),
    ),
    "body_1m": Difference(
        kamailio="connection closed at 16 KiB (TCP read buffer overrun), nothing relayed",
        msrpd="200 OK to Alice, the 1 MiB frame relayed intact to Bob",
        why=_NO_SIZE_LIMIT,
        steps=_big_frame_relayed(),
    ),
    "body_64k": Difference(
        kamailio="connection closed at 16 KiB, nothing relayed",
        msrpd="200 OK to Alice, the 64 KiB frame relayed intact to Bob",
        why=_NO_SIZE_LIMIT,
        steps=_big_frame_relayed(),
    ),
    "frame_11239": Difference(
        kamailio="501 Request-method-not-understood (the fake SIP message does not fit, every "
        "$msrp() read fails), nothing relayed",
        msrpd="200 OK and relayed",
        why=_NO_SIZE_LIMIT,
        steps=_big_frame_relayed(),
    ),
    "frame_16383": Difference(
        kamailio="501 Request-method-not-understood, nothing relayed",
        msrpd="200 OK and relayed",
        why=_NO_SIZE_LIMIT,
        steps=_big_frame_relayed(),
    ),
    "frame_16384": Difference(
        kamailio="connection closed (TCP read buffer overrun), nothing relayed",
        msrpd="200 OK and relayed",
        why=_NO_SIZE_LIMIT,
        steps=_big_frame_relayed(),
    ),
    "first_line_no_method": Difference(
        kamailio="the worker crashes (NULL arithmetic in tcp_read_headers), Kamailio stops",
        msrpd="400 and the connection goes on (the probe gets its 481); no worker dies",
        why="DESIGN §1/§8; reference §0.5 and §15.37 ('do not run')",
        steps=_refused_malformed("malformed first line"),
    ),
    "header_without_colon": Difference(
        kamailio="connection closed silently",
        msrpd="400 and the connection goes on",
        why=_MALFORMED,
        steps=_refused_malformed("header line 3 has no colon"),
    ),
    "malformed_from_before_to": Difference(
        kamailio="connection closed silently",
        msrpd="400 and the connection goes on",
        why=_MALFORMED + "; RFC 4975 §7.1 wants To-Path first",
        steps=_refused_malformed("To-Path must be the first header"),
    ),
    "lf_only_line_endings": Difference(
        kamailio="silence: the core reader never finds the frame's end; the connection hangs "
        "and swallows the probe",
        msrpd="400 for the frame (its transaction id is readable), then the connection closes",
        why="README 'What the reader answers': bare-LF line endings get a 400 when the "
        "transaction id is known, then the connection closes (framing is lost); DESIGN §8",
        steps={
            2: {
                "alice": [
                    re.compile(r"MSRP <TID3> 400 [^\r\n]*\r\n(?:[^\r\n]+\r\n)*-------<TID3>\$\r\n"),
                    "<EOF>",
                ]
            },
            3: None,
        },
    ),
    "report_unknown_session": Difference(
        kamailio="481 Session-does-not-exist to the REPORT (msrp_reply's REPORT guard never fires)",
        msrpd="no response",
        why="RFC 4975 §7.1.2: a REPORT is never answered; reference §0.2",
        steps={0: {}},
    ),
    # ---- variants (variants.py): reference §15 items no golden file records ----
    "auth_from_path_two_uris": Difference(
        kamailio="the 401's To-Path holds only the first From-Path URI (H)",
        msrpd="the 401's To-Path is the whole From-Path (H A)",
        why="RFC 4975 §7.2: a response's To-Path is the request's From-Path; Kamailio's "
        "SEND/REPORT type-id confusion in msrp_reply (reference §0.2); README table",
        steps={0: {"alice": [_challenge("<TID1>", f"msrp://127.0.0.1:9/hop;tcp {A}", "<NONCE1>")]}},
    ),
    "auth_replayed_on_another_connection": Difference(
        kamailio="401 with a fresh challenge (nonce_count=1: that nc was already used)",
        msrpd="401 with a fresh challenge marked stale=true",
        why="msrpd/routing/auth.py: a nonce count not higher than the last one seen is answered "
        "like a stale nonce (RFC 2617 §3.2.1-§3.2.2), so an honest client retries with the new "
        "nonce without asking its user again; Kamailio's 401 says nothing about staleness",
        steps={2: {"mallory": [_challenge("<TID3>", A, "<NONCE2>", stale=True)]}},
    ),
    "from_path_no_space": Difference(
        kamailio="relayed with 'From-Path:RB srp://…': the first character of Alice's URI lost",
        msrpd="relayed with 'From-Path:RB A', every byte kept",
        why="Kamailio assumes 'From-Path: ' is 11 bytes (reference §0.6, §6.2); msrpd splices "
        "at parsed offsets; README table",
        steps=_send_relayed(from_path="From-Path:"),
    ),
    "to_path_two_spaces": Difference(
        kamailio="200 to Alice, nothing relayed: the next hop is the empty string between the "
        "two spaces",
        msrpd="200 to Alice and relayed to Bob (To-Path: B)",
        why="msrpd splits URIs on runs of blanks (reference §6.2); README table",
        steps=_send_relayed(),
    ),
    "to_path_lower_case": Difference(
        kamailio="connection closed silently ('to-path' is not recognised: no To-Path)",
        msrpd="200 to Alice and relayed to Bob, the header name in canonical case (To-Path)",
        why="header names are case-insensitive (RFC 4975 §9 via RFC 4234 §2.3), and the relay "
        "emits the canonical case (rfc-checklist §1.6, case 8a); README table",
        steps=_send_relayed(),
    ),
    "msrp_lower_case": Difference(
        kamailio="silence: the core reader does not take 'msrp …' for MSRP and waits",
        msrpd="the connection is closed: without 'MSRP ' there is no transaction id to answer",
        why="DESIGN §8 (never hang); README: 400 only when the transaction id is known",
        steps={0: {"alice": ["<EOF>"]}},
    ),
    "message_id_lower_case": Difference(
        kamailio="the 200 has no Message-ID line ('message-id' is not recognised)",
        msrpd="the 200 copies the line as 'Message-ID: msg-1', and so does the relayed SEND",
        why="header names are case-insensitive (RFC 4975 §9 via RFC 4234 §2.3), and the relay "
        "emits the canonical case (rfc-checklist §1.6, case 8a); README table",
        steps=_send_relayed(),
    ),
    "response_without_reason": Difference(
        kamailio="'MSRP tid 200' is read as a request with method '200': 501",
        msrpd="a response (absorbed: its To-Path names only the relay)",
        why="RFC 4975 §9: status-code [SP comment], the reason is optional; README table",
        steps={0: {}},
    ),
    "trailing_blanks_after_from_path": Difference(
        kamailio="the 481's To-Path line runs into From-Path ('To-Path: A  From-Path: …', one "
        "malformed line)",
        msrpd="the blanks are trimmed: a well-formed 481",
        why="never send a malformed line (RFC 4975 §9); reference §7; README table",
        steps={
            0: {
                "alice": [
                    frame(
                        "MSRP <TID1> 481 Session-does-not-exist",
                        f"To-Path: {A}",
                        f"From-Path: {NOSUCH}",
                        "Message-ID: msg-1",
                        "-------<TID1>$",
                    ),
                ]
            }
        },
    ),
    "send_through_a_clients_address": Difference(
        kamailio="200 to Alice, and the SEND written into Bob's connection: the next hop's "
        "address finds his inbound connection",
        msrpd="200 to Alice, nothing to Bob: a To-Path URI reaches only connections the relay "
        "opened; the new connection to Bob's address is refused (Failure-Report: no, so no "
        "REPORT)",
        why="issue 12 item 2: a client's connection takes only frames routed to it through "
        "its session or a set_dst of the route, else anyone who knows its address can write "
        "to it (rfc-checklist §2.1 step 8: never dial or resolve a client's URI to reach it); "
        "README table",
        steps={
            _SEND: {
                "alice": [
                    frame(
                        "MSRP <TID5> 200 OK",
                        f"To-Path: {A}",
                        f"From-Path: {RB2}",
                        "Message-ID: msg-1",
                        "-------<TID5>$",
                    ),
                ]
            }
        },
    ),
    "leading_crlf": Difference(
        kamailio="answers the CRLF CRLF before the frame with a CRLF (SIP keep-alive), then 200",
        msrpd="skips the CRLFs silently, then 200",
        why="MSRP has no keep-alive (RFC 4975 defines no CRLF ping); msrpd/protocol/reader.py. "
        "Not in README's table yet",
        steps=_send_relayed(),
    ),
}
