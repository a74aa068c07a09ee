"""Which way does a hop of ours go: msrp.token() (RFC 4976 §6.4; msrp.to_us() asks
config/selfuri.py whether it is ours).

Rules (rfc-checklist §2.1 steps 2 and 4, §5.1-§5.3):
- to_us: the leftmost To-Path URI names this relay (config/selfuri.py: listen addresses,
  use_path_addr, aliases; RFC 4975 §6.1 comparison). Its session-id does not count there, so a
  token URI of ours is us too; whether the token is valid is token()'s question.
- token: the leftmost To-Path URI's session-id looked up in the cmap, where cmap_save put it
  with the connection id of the connection the AUTH came on (its owner).
  OUTBOUND (1): the request arrived on the owner's connection; it goes on to To-Path #2.
  INBOUND (2): it arrived on any other connection; it goes to the owner's connection only
  (the destination is set by connection id, never by the URI after the token: a third party
  who knows the token reaches its owner and no one else, §5.2).
  BARE (-1): no session-id: our bare URI (an AUTH to us, or nothing to forward from).
  INBOUND too, to another node: a token this relay did not issue that another node of the
  cluster holds (env.node_of: its directory entry in Redis, asked of the cluster agent; the
  frame may wait for the answer, waits.py). The destination is that node's own URI for the
  token, from the node registry, never from the frame (no open relay); the frame keeps its
  paths but for the leftmost To-Path URI (Destination.node), so that node delivers it as an
  inbound frame of its own token. Never for a frame that came from another node (ConnInfo.node):
  a stale directory cannot make two nodes pass a frame back and forth.
  INVALID (-2): never issued, expired or its connection gone, and no other node holds it;
  one code, so that no answer can tell them apart (§5.3). An expired entry is deleted here
  (the sweep would remove it later; RFC 4976 §6.3: the granted Expires is a hard limit). A
  connection that closes deletes its entries (workers/context.py) and a dead worker's are
  purged (supervisor), so "gone" is "not in the cmap"; a close racing this frame fails at
  delivery (for_conid).
- Relay peers authenticated by mutual TLS (tokens valid on any connection from that relay,
  RFC 4976 §6.3) are not supported: every connection is a client's (a node link included:
  its frames go to a token's owner like any other connection's).
"""

from __future__ import annotations

from ..protocol import ConnInfo, Frame
from .cmapops import session_of
from .env import Destination, RouteEnv

__all__ = ["BARE", "INBOUND", "INVALID", "OUTBOUND", "token"]

OUTBOUND = 1
INBOUND = 2
BARE = -1
INVALID = -2


def token(frame: Frame, conn: ConnInfo, env: RouteEnv) -> tuple[int, Destination | None]:
    """(direction code, the owner's connection for INBOUND)."""
    sessid = session_of(frame)
    if not sessid:
        return BARE, None
    cmap = env.cmap
    if cmap is None:
        return INVALID, None
    found = cmap.owner(sessid)
    if found is None:
        uri = None if conn.node else env.node_of(sessid)
        if uri is None:
            return INVALID, None
        return INBOUND, Destination(uri, node=True)
    conid, sock, expires = found
    if expires < env.now():
        cmap.delete(sessid)
        return INVALID, None
    if conn.conid is not None and conid == conn.conid and not conn.node:
        return OUTBOUND, None  # (a node link owns no token: cmapops.save refuses it)
    return INBOUND, Destination(None, conid, sock)
