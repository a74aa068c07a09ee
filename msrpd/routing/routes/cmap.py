"""The cmap route: Kamailio's msrp module documentation example 1.18, ported to msrpd.

An AUTH addressed to this relay is authenticated (digest) and gets a session in the
connection map; SEND and REPORT frames for a known session are relayed to the connection
that authenticated it; frames with more hops are relayed along To-Path. Replies and reason
phrases are the example's.

As in the example, every user's password is "xyz123" ("passwd can be loaded from DB based on
$au"): that is the case once `[auth] users` is set — then the user store (`msrpd user add`)
decides, and PASSWORD is not used. The realm is `[auth] realm` ("myrealm" by default).

This file as shipped runs compiled (mypyc) with the relay's hot path; a copy that differs by
one byte runs interpreted, exactly as written.
"""

from typing import Final

from msrpd.routing import Msrp

PASSWORD: Final = "xyz123"


def ksr_msrp_event(msrp: Msrp) -> None:
    msrp.reply_flags(1)

    if msrp.is_reply():
        msrp.relay()
        return

    method = msrp.method
    if method == "AUTH":
        if msrp.nexthops > 0:
            msrp.relay()
            return
        # frame for local server - send Use-Path
        realm = msrp.env.policy.realm
        password = None if msrp.has_user_store() else PASSWORD
        if not msrp.www_authenticate(realm, password):
            msrp.reply("401", "Unauthorized", msrp.www_challenge(realm))
            return
        msrp.cmap_save()
    elif method in ("SEND", "REPORT"):
        if msrp.nexthops > 1:
            msrp.reply("200", "OK")  # never answers a REPORT (RFC 4975 §7.1.2)
            msrp.relay()
            return
        if msrp.cmap_lookup() > 0:
            msrp.reply("200", "OK")
            msrp.relay_flags(1)
            msrp.relay()
        else:
            msrp.reply("481", "Session-does-not-exist")
    else:
        msrp.reply("501", "Request-method-not-understood")
