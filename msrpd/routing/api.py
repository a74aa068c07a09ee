"""The `msrp` object a routing script gets for each frame: Kamailio's msrp module API.

Rules:
- Names and return codes follow Kamailio's cfg/KEMI functions (reference §6-§8, §10): 1 is
  success, negative is failure, so scripts ported from kamailio.cfg branch the same way.
  Where Kamailio has a bug (DESIGN §1), the documented RFC behaviour is used instead.
- Send flags are cumulative within one frame (msrp_relay_flags / msrp_reply_flags).
- The object lives for one frame; nothing here keeps state between frames.
"""

from __future__ import annotations

from typing import Final, cast

from ..protocol import (
    MSRP_PV_KEYS,
    ConnInfo,
    Frame,
    LocalProtocolError,
    MsrpUri,
    build_reply,
    build_sipmsg,
    forward_paths,
    msrp_pv,
    parse_uri,
    relay_pieces,
    retarget,
)
from ..protocol.frame import AUTH
from ..protocol.pv import PvValue
from ..protocol.splice import Spliced
from . import auth, cmapops, hop, tm
from .env import Destination, HotEnv, RouteEnv, SendFlags
from .sht import ScriptHTable

__all__ = ["Msrp"]

_METHOD_NAMES: Final = {m: m.decode() for m in (b"SEND", b"REPORT", b"AUTH")}
"""The usual methods' names, made once: a route reads msrp.method on every frame."""


_STATUS: Final = {
    str(code): code for code in (200, 400, 401, 403, 408, 413, 415, 423, 481, 501, 506)
}
"""RFC 4975 §10's codes as routes pass them ("200"): int() on a str is a generic call."""


def _status(code: int | str) -> int:
    if isinstance(code, str):
        known = _STATUS.get(code)
        if known is not None:
            return known
    return int(code)


class Msrp:
    """One frame as the routing script sees it."""

    __slots__ = ("_auth_stale", "_dest", "_relay_flags", "_reply_flags", "conn", "env", "frame")

    def __init__(self, frame: Frame, conn: ConnInfo, env: RouteEnv) -> None:
        self.frame = frame
        self.conn = conn
        self.env = env
        self._dest: Destination | None = None
        self._relay_flags = 0
        self._reply_flags = 0
        self._auth_stale = False

    # $msrp(key) as an attribute: msrp.method, msrp.sessid, ... (reference §4), one property
    # each. Not a __getattr__: a class with one gets a getattr hook that every attribute of
    # the script's calls pays (msrp.relay, msrp.reply, ...), and the interpreter does not
    # cache such a class's methods (CPython 3.11 LOAD_METHOD specialization).

    @property
    def buf(self) -> PvValue:
        return msrp_pv(self.frame, "buf", self.conn)

    @property
    def buflen(self) -> PvValue:
        return msrp_pv(self.frame, "buflen", self.conn)

    @property
    def body(self) -> PvValue:
        return msrp_pv(self.frame, "body", self.conn)

    @property
    def bodylen(self) -> PvValue:
        return msrp_pv(self.frame, "bodylen", self.conn)

    @property
    def hdrs(self) -> PvValue:
        return msrp_pv(self.frame, "hdrs", self.conn)

    @property
    def transid(self) -> PvValue:
        return msrp_pv(self.frame, "transid", self.conn)

    @property
    def code(self) -> PvValue:
        return msrp_pv(self.frame, "code", self.conn)

    @property
    def reason(self) -> PvValue:
        return msrp_pv(self.frame, "reason", self.conn)

    @property
    def msgid(self) -> PvValue:
        return msrp_pv(self.frame, "msgid", self.conn)

    @property
    def crthop(self) -> PvValue:
        return msrp_pv(self.frame, "crthop", self.conn)

    @property
    def nexthop(self) -> PvValue:
        return msrp_pv(self.frame, "nexthop", self.conn)

    @property
    def lasthop(self) -> PvValue:
        return msrp_pv(self.frame, "lasthop", self.conn)

    @property
    def prevhop(self) -> PvValue:
        return msrp_pv(self.frame, "prevhop", self.conn)

    @property
    def firsthop(self) -> PvValue:
        return msrp_pv(self.frame, "firsthop", self.conn)

    @property
    def prevhops(self) -> PvValue:
        return msrp_pv(self.frame, "prevhops", self.conn)

    @property
    def sessid(self) -> str | None:
        value = msrp_pv(self.frame, "sessid", self.conn)
        return value if isinstance(value, str) else None  # typed for the routes (mypyc)

    @property
    def srcaddr(self) -> str:
        return self.conn.srcaddr

    @property
    def srcsock(self) -> str:
        return self.conn.srcsock

    @property
    def conid(self) -> PvValue:
        return msrp_pv(self.frame, "conid", self.conn)

    @property
    def method(self) -> str | None:
        """`$msrp(method)`, read on every frame by most routes: without the generic lookup."""
        method = self.frame.method
        if method is None:
            return None
        return _METHOD_NAMES.get(method) or method.decode("ascii", "surrogateescape")

    @property
    def nexthops(self) -> int:
        """`$msrp(nexthops)`: To-Path URIs after this relay (reference §4)."""
        return self.frame.to_count - 1

    def pv(self, key: str) -> PvValue:
        """`$msrp(key)`; raises KeyError for an unknown key."""
        if key not in MSRP_PV_KEYS:
            raise KeyError(key)
        return msrp_pv(self.frame, key, self.conn)

    def is_request(self) -> bool:
        return self.frame.method is not None

    def is_reply(self) -> bool:
        return self.frame.method is None

    def hdr(self, name: str) -> str | None:
        """The first header `name` (case-insensitive), or None."""
        value = self.frame.header(name)
        return None if value is None else value.decode("utf-8", "surrogateescape")

    @property
    def sipmsg(self) -> bytes | None:
        """Kamailio's fake SIP message for this frame, when `[msrp] sipmsg` is on."""
        return build_sipmsg(self.frame) if self.env.policy.sipmsg else None

    def msrpuri(self, text: str) -> MsrpUri:
        """`{msrpuri.key}`: the parsed URI (raises LocalProtocolError when malformed)."""
        return parse_uri(text)

    def relay_flags(self, flags: int) -> int:
        self._relay_flags |= int(flags) & 0b11
        return 1

    def reply_flags(self, flags: int) -> int:
        self._reply_flags |= int(flags) & 0b11
        return 1

    def reply(self, code: int | str, text: str, hdrs: str = "") -> int:
        """Answer the frame on the connection it came on. Responses and REPORTs are never
        answered (RFC 4975 §7.2, §7.1.2): -1."""
        frame = self.frame
        method = frame.method
        if method is None or method == b"REPORT":
            return -1
        try:
            status = _status(code)
            data = build_reply(frame, status, text, hdrs)
        except (LocalProtocolError, ValueError):
            return -1
        env = self.env
        if isinstance(env, HotEnv):  # the worker's: compiled, a native call (env.py)
            cast(HotEnv, env).write_origin(data, self._reply_flags, status)
        else:
            env.write_origin(data, self._reply_flags, status)
        return 1

    def set_dst(self, addr: str, sock: str = "") -> int:
        """Send the next relay() to `addr` (an MSRP URI); -1 when it does not parse."""
        try:
            self._dest = Destination(parse_uri(addr), None, sock, chosen=True)
        except LocalProtocolError:
            return -1
        return 1

    def relay(self) -> int:
        """Forward the frame along its To-Path (RFC 4976 §6.2): to the set_dst/cmap_lookup
        destination, else To-Path URI #2 over a connection the relay opened (a response: one
        that exists). -1 when there is nowhere to send it."""
        dest, flags = self._dest, self._relay_flags
        data: bytes | Spliced
        try:
            if dest is not None and dest.node and dest.uri is not None:
                data = retarget(self.frame, dest.uri.raw.encode())  # to another node (hop.py)
            else:
                data = relay_pieces(self.frame)  # a big frame in two pieces
        except LocalProtocolError:
            return -1
        if dest is None:
            try:
                dest = Destination(parse_uri(self.frame.to_path[1]))
            except (LocalProtocolError, IndexError):
                return -1
            if self.frame.method is None:
                # A response goes only over an existing connection (RFC 4975 §7.2, §5.4).
                flags |= SendFlags.REUSE_ONLY
        env = self.env
        if isinstance(env, HotEnv):  # the worker's: compiled, a native call (env.py)
            return cast(HotEnv, env).relay(self.frame, data, dest, flags)
        return env.relay(self.frame, data, dest, flags)

    def t_reply(self, code: int | str, text: str, hdrs: str = "") -> int:
        """The hop-by-hop response, obeying Failure-Report (tm.py): 1 written, 0 suppressed
        by Failure-Report, -1 error (a response, a REPORT, a malformed code or header)."""
        try:
            status = _status(code)
        except ValueError:
            return -1
        return tm.t_reply(self.frame, self.env, self._reply_flags, status, text, hdrs)

    def t_relay(self) -> int:
        """Stateful forwarding (tm.py, workers/txrelay.py): a request under a new transaction
        id, its answer mapped back; a response to its transaction. 1 on its way, else < 0."""
        frame, dest = self.frame, self._dest
        if dest is None:
            if frame.method is not None:  # To-Path #2
                return tm.t_relay(frame, self.env, None, self._relay_flags)
            dest = tm.BACK  # a response goes where its transaction says
        return self.env.t_relay(frame, dest, self._relay_flags)

    def forward(self, tpath: str | None = None, fpath: str | None = None) -> int:
        """Kamailio 6.0's msrp_forward: send the frame with To-Path `tpath` and From-Path
        `fpath` (default: the frame's To-Path), no rotation, to the set_dst/cmap_lookup
        destination or else the first URI of the new To-Path. -1 when that is impossible."""
        try:
            data = forward_paths(self.frame, tpath, fpath)
            dest = self._dest or Destination(parse_uri((tpath or self.frame.to_path[0]).split()[0]))
        except (LocalProtocolError, IndexError):
            return -1
        return self.env.relay(self.frame, data, dest, self._relay_flags)

    def cmap_save(self, hdrs: str = "") -> int:
        """Authenticate-and-register an AUTH: grant Expires, save the session, answer 200 with
        Use-Path and `hdrs` (reference §8.2 codes: -1 no cmap or full, -2 not AUTH, -3/-4 423
        sent)."""
        if self.frame.method != AUTH:
            return -2
        return cmapops.save(self.frame, self.conn, self.env, self._reply_flags, hdrs)

    def to_us(self) -> bool:
        """The leftmost To-Path URI names this relay (a token of ours included; RFC 4976
        §6.2; routing/hop.py)."""
        return self.env.to_us(self.frame.first_to)

    def token(self) -> int:
        """The leftmost To-Path URI as a token we issued (routing/hop.py): 1 outbound (the
        arriving connection owns it), 2 inbound (relay() then goes to the owner's connection
        only; for a token another node of the cluster holds, that node), -1 no session-id
        (our bare URI), -2 unknown, expired or its connection gone."""
        code, dest = hop.token(self.frame, self.conn, self.env)
        if dest is not None:
            self._dest = dest
        return code

    def close(self) -> int:
        """Close the connection the frame came on without answering it (RFC 4976 §6.2: a
        request not addressed to us)."""
        self.env.close_origin("request not addressed to this relay")
        return 1

    def cmap_lookup(self) -> int:
        """Find the connection of To-Path #1's session (reference §8.3 codes: -1 no cmap,
        -2 AUTH, -3 no session id, -4 not found or expired)."""
        if self.frame.method == AUTH:
            return -2
        dest, code = cmapops.lookup(self.frame, self.env)
        if dest is not None:
            self._dest = dest
        return code

    def www_authenticate(self, realm: str, password: str | None = None) -> bool:
        """Check the AUTH's digest credentials (RFC 4976 §9.1) against `password`, or against
        the user store when None. False for missing, stale or wrong credentials."""
        result = auth.check(self.frame, self.env, realm, password)
        # A replayed count gets a fresh nonce like an expired one (RFC 2617 §3.2.2).
        self._auth_stale = result in (auth.AuthResult.STALE, auth.AuthResult.REPLAY)
        if result is not auth.AuthResult.NO_CREDENTIALS:
            ok = result is auth.AuthResult.OK
            # A failure counts against the client ([limits]) unless only the nonce or count
            # was old, or another relay forwarded the AUTH (From-Path names more than the
            # client): that relay's connection is not closed for it (rfc-checklist §3.7).
            fault = not ok and not self._auth_stale and len(self.frame.from_path) == 1
            self.env.auth_done(ok, fault)
        return result is auth.AuthResult.OK

    @property
    def htable(self) -> ScriptHTable:
        """Kamailio's $sht / $shtex: the shared tables every worker sees."""
        return self.env.htable

    def user_ha1(self, username: str, realm: str | None = None) -> str | None:
        """The user store's HA1 for `username` in `realm` (default [auth] realm), or None."""
        return self.env.user_ha1(username, realm or self.env.policy.realm)

    def has_user_store(self) -> bool:
        """Whether `[auth] users` is configured (www_authenticate without a password uses it)."""
        return self.env.has_user_store

    def auth_info(self, realm: str, password: str | None = None) -> str:
        """The `Authentication-Info` line (with CRLF) for the 200 to an AUTH that
        www_authenticate passed, for cmap_save(hdrs) (RFC 4976 §9.1); "" without qop."""
        return auth.info_header(self.frame, self.env, realm, password)

    def www_challenge(self, realm: str) -> str:
        """The `WWW-Authenticate` header line (with CRLF) for a 401, with a fresh nonce."""
        return auth.challenge_header(self.env, realm, stale=self._auth_stale)
