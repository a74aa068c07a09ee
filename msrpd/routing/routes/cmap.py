"""The cmap route: Kamailio's msrp module documentation example 1.18, ported to msrpd.

An AUTH addressed to this relay is authenticated (digest against the user store) and gets a
session in the connection map; SEND and REPORT frames for a known session are relayed to the
connection that authenticated it; frames with more hops are relayed along To-Path.

Differences from the Kamailio example: the realm comes from `[auth] realm` and the password
from the user store (`msrpd user add`), not from a constant in the script.
"""

SEND_OK = ("200", "OK")


def ksr_msrp_event(msrp):
    msrp.reply_flags(1)

    if msrp.is_reply():
        msrp.relay()
        return

    method = msrp.method
    if method == "AUTH":
        if msrp.nexthops > 0:
            msrp.relay()
            return
        realm = msrp.env.policy.realm
        if not msrp.www_authenticate(realm):
            msrp.reply("401", "Unauthorized", msrp.www_challenge(realm))
            return
        msrp.cmap_save()
    elif method in ("SEND", "REPORT"):
        if msrp.nexthops > 1:
            msrp.reply(*SEND_OK)  # never answers a REPORT (RFC 4975 §7.1.2)
            msrp.relay()
            return
        if msrp.cmap_lookup() > 0:
            msrp.reply(*SEND_OK)
            msrp.relay_flags(1)
            msrp.relay()
        else:
            msrp.reply("481", "Session-does-not-exist")
    else:
        msrp.reply("501", "Request-method-not-understood")
