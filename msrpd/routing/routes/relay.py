"""The relay route: an RFC 4976 relay, msrpd's default (`[msrp] route` unset).

Every request goes through rfc-checklist §2.1 in order; nothing is forwarded except through
a token this relay issued, in the direction the arriving connection decides:

1. A response: t_relay() matches it to the request it answers (or drops it). A request
   the reader let through but RFC 4975 §9 does not allow is answered 400 and not forwarded:
   a transaction id outside 4 to 32 characters (`ident`; the reader takes 1 to 64 for
   endpoints' sake), a method that is not upper case, a body over 10240 bytes on anything
   but a SEND (RFC 4975 §7.1; a streamed one is over it).
2. The leftmost To-Path URI is not ours: the connection is closed, nothing is answered
   (RFC 4976 §6.2; policy §8.1: every connection is a client's, relay peers are not
   supported).
3. Our bare URI (no token): an AUTH addressed only to us is authenticated here: over TLS only
   (RFC 4976 §8, §9.2), which includes WebSocket over TLS (wss, RFC 7977 §5.3; over plain TCP
   or ws: 403), digest against the user store (`[auth] users`;
   without one no AUTH succeeds), then a token in Use-Path with Authentication-Info. Anything
   else to the bare URI has nothing to be forwarded from: 403.
4. A token that is unknown, expired or whose connection is gone: 481, one answer for all
   three (RFC 4976 §6.3 MUST discard; checklist §5.3).
5. A valid token: outbound (the request came on the token's own connection) goes on to the
   next To-Path URI; inbound (any other connection) goes only to the token owner's
   connection (RFC 4976 §6.4). A SEND gets the hop-by-hop 200 first (RFC 4976 §6.4.1); REPORT
   and unknown methods get no answer (RFC 4976 §6.4.2), unless `[msrp]
   block_unknown_methods` is set: then 501.

t_reply obeys Failure-Report (no: nothing; partial: no 200; never to a REPORT), so every
answer here follows the checklist's §2.4 table.

This file as shipped runs compiled (mypyc) with the relay's hot path; a copy that differs by
one byte runs interpreted, exactly as written.
"""

from typing import Final

from msrpd.routing import Msrp

KNOWN_METHODS: Final = ("SEND", "REPORT", "AUTH")
MAX_NON_SEND_BODY: Final = 10240


def ksr_msrp_event(msrp: Msrp) -> None:
    method = msrp.method
    if method is None:  # a response (msrp.is_reply())
        msrp.t_relay()
        return
    problem = malformed(msrp, method)
    if problem:
        msrp.t_reply(400, f"Bad Request ({problem})")
        return
    if not msrp.to_us():
        msrp.close()
        return
    token = msrp.token()
    if token == -1:
        if method == "AUTH" and msrp.nexthops == 0:
            authenticate(msrp)
        else:
            msrp.t_reply(403, "Forbidden")
        return
    if token < 0:
        msrp.t_reply(481, "Session Does Not Exist")
        return
    if msrp.nexthops == 0:
        msrp.t_reply(400, "Bad Request (no next hop)")
        return
    if method not in KNOWN_METHODS and msrp.env.policy.block_unknown_methods:
        msrp.t_reply(501, "Not Implemented")
        return
    if method == "SEND":
        msrp.t_reply(200, "OK")
    msrp.t_relay()


def malformed(msrp: Msrp, method: str) -> str:
    """What RFC 4975 §9 and §7.1 forbid in a request the reader accepted; "" when nothing."""
    if not 4 <= len(msrp.frame.tid) <= 32:
        return "transaction id must be 4 to 32 characters"
    if method == "SEND":
        return ""
    upalpha = method.isascii() and method.isalpha() and method.isupper()
    if method not in KNOWN_METHODS and not upalpha:
        return "method must be upper-case letters"
    body = msrp.frame.body
    if msrp.frame.streamed or (body is not None and len(body) > MAX_NON_SEND_BODY):
        return f"a {method} body may not exceed {MAX_NON_SEND_BODY} bytes"
    return ""


def authenticate(msrp: Msrp) -> None:
    if not msrp.srcsock.startswith(("tls:", "wss:")):
        msrp.t_reply(403, "Forbidden (AUTH needs TLS)")
        return
    realm = msrp.env.policy.realm
    if not msrp.www_authenticate(realm):
        msrp.t_reply(401, "Unauthorized", msrp.www_challenge(realm))
        return
    msrp.cmap_save(msrp.auth_info(realm))
