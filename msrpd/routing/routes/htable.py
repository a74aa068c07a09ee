"""The htable route: Kamailio's msrp module documentation example 1.17, ported to msrpd.

An AUTH addressed to this relay is authenticated and gets a session id whose client address
and socket are kept in the shared table "msrp" (Kamailio's $sht); SEND and REPORT frames for a
known session are relayed to that address over the existing connection; frames with more hops
are relayed along To-Path. The port follows the oracle's kamailio-htable.cfg, the FIXED copy:
423 only outside [MSRP_MIN_EXPIRES, MSRP_MAX_EXPIRES], and an accepted Expires is echoed.

Differences from the Kamailio example, each marked where it happens:
- session ids are 96 bits from the CSPRNG, not "s.$pp.$cnt.$RANDOM" (RFC 4976 §6.3);
- Use-Path names the listen address the AUTH arrived on, not a hard-coded msrp://127.0.0.1:PORT;
- the realm is `[auth] realm` ("myrealm" by default); every user's password is "xyz123", as
  in the example, until `[auth] users` is set: then the user store decides (as in cmap.py);
- the granted expiry is set on the two items actually stored (the example sets $shtex on a key
  it never stored, so its items live for the table's autoexpire whatever was granted).

This file as shipped runs compiled (mypyc) with the relay's hot path; a copy that differs by
one byte runs interpreted, exactly as written.
"""

import re
from typing import Final

from msrpd.routing import Msrp

MSRP_MIN_EXPIRES: Final = 1800
MSRP_MAX_EXPIRES: Final = 3600
# "passwd can be loaded from DB based on $au": the user store, when set
PASSWORD: Final = "xyz123"
# modparam("htable", "htable", "msrp=>size=8;autoexpire=MSRP_MAX_EXPIRES;")
TABLE: Final = "msrp"
INTEGER: Final = re.compile(r"[+-]?[0-9]{1,18}")


def _to_int(text: str) -> int:
    # Kamailio's (int) cast: a value that is not an integer converts to 0 (and logs a warning).
    text = text.strip()
    return int(text) if INTEGER.fullmatch(text) else 0


def _use_path(msrp: Msrp, sessid: str) -> str:
    # The listen address the AUTH arrived on (Kamailio: "msrp://127.0.0.1:MSRP_PORT/" typed in).
    proto, _, hostport = msrp.srcsock.partition(":")
    scheme = "msrps" if proto == "tls" else "msrp"
    return f"{scheme}://{hostport}/{sessid};tcp"


def _auth(msrp: Msrp) -> None:
    if msrp.nexthops > 0:
        msrp.relay()
        return
    # frame for local server - send Use-Path
    realm = msrp.env.policy.realm  # [auth] realm (Kamailio: "myrealm" typed in)
    password = None if msrp.has_user_store() else PASSWORD
    if not msrp.www_authenticate(realm, password):
        msrp.reply("401", "Unauthorized", msrp.www_challenge(realm))
        return
    value = msrp.hdr("Expires")
    if value is not None:
        expires = _to_int(value)
        if expires < MSRP_MIN_EXPIRES:
            msrp.reply("423", "Interval Out-of-Bounds", f"Min-Expires: {MSRP_MIN_EXPIRES}\r\n")
            return
        if expires > MSRP_MAX_EXPIRES:
            msrp.reply("423", "Interval Out-of-Bounds", f"Max-Expires: {MSRP_MAX_EXPIRES}\r\n")
            return
    else:
        expires = MSRP_MAX_EXPIRES

    # 96 random bits, a letter or digit first (Kamailio: "s.$pp.$cnt.$RANDOM")
    sessid = msrp.env.new_session_id()
    ht = msrp.htable
    if (
        ht.set(TABLE, sessid + "::srcaddr", msrp.srcaddr) < 0
        or ht.set(TABLE, sessid + "::srcsock", msrp.srcsock) < 0
    ):
        ht.delete(TABLE, sessid + "::srcaddr")  # not in Kamailio: a full table is an error
        msrp.reply("500", "Server Error")
        return
    # On both stored items (Kamailio: $shtex(msrp=>$var(sessid)), a key it never stored).
    ht.expire(TABLE, sessid + "::srcaddr", expires + 5)
    ht.expire(TABLE, sessid + "::srcsock", expires + 5)
    headers = f"Use-Path: {_use_path(msrp, sessid)}\r\nExpires: {expires}\r\n"
    msrp.reply("200", "OK", headers)


def _send_or_report(msrp: Msrp, method: str) -> None:
    if msrp.nexthops > 1:
        if method != "REPORT":
            msrp.reply("200", "OK")
        msrp.relay()
        return
    sessid = msrp.sessid or ""
    ht = msrp.htable
    addr = ht.get(TABLE, sessid + "::srcaddr")
    if addr is None:
        # one more hop, but we don't have the address in the htable
        if method != "REPORT":
            msrp.reply("481", "Session-does-not-exist")
        return
    if method != "REPORT":
        msrp.reply("200", "OK")
    msrp.relay_flags(1)
    sock = ht.get(TABLE, sessid + "::srcsock") or ""
    msrp.set_dst(str(addr), str(sock))  # $sht values may be integers: this route stores text
    msrp.relay()


def ksr_msrp_event(msrp: Msrp) -> None:
    msrp.reply_flags(1)

    if msrp.is_reply():
        msrp.relay()
        return

    method = msrp.method
    if method == "AUTH":
        _auth(msrp)
    elif method in ("SEND", "REPORT"):
        _send_or_report(msrp, method)
    else:
        msrp.reply("501", "Request-method-not-understood")
