"""An in-memory RouteEnv and a tiny MSRP client, to drive routing scripts without processes.

Frames go in as bytes and are parsed by the real FrameReader; the script gets the real Msrp
object; what it writes back or relays is recorded here and parsed again by the tests. The cmap
and htable are real shared-memory tables (created per test by conftest.py), so the routes run
exactly the code the workers run, minus sockets.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from msrpd.config.selfuri import SelfUris
from msrpd.protocol import (
    ConnInfo,
    Frame,
    FrameReader,
    LocalProtocolError,
    MsrpUri,
    parse_uri,
    relay_splice,
    retarget,
)
from msrpd.protocol import digest as dg
from msrpd.protocol.splice import Spliced
from msrpd.routing import Destination, Msrp, RouteEnv, RoutePolicy, load_route
from msrpd.routing.sht import ScriptHTable
from msrpd.shm import Cmap, HTable
from msrpd.workers.sessids import new_session_id

ROUTES = Path(__file__).resolve().parents[2] / "msrpd" / "routing" / "routes"
NOW = 1_700_000_000.0
REALM = "myrealm"
PASSWORDS = {"alice": "xyz123", "bob": "xyz123", "carol": "xyz123", "dave": "dave-pw"}
RELAY = "msrp://127.0.0.1:2855;tcp"
SOCK = "tcp:127.0.0.1:2855"


@dataclass
class Relayed:
    data: bytes
    dest: Destination
    flags: int

    @property
    def frame(self) -> Frame:
        return parse(self.data)


@dataclass
class FakeEnv:
    """RouteEnv in memory: replies and relays are recorded, the clock is `clock`."""

    cmap: Cmap | None
    ht: HTable | None
    policy: RoutePolicy = field(
        default_factory=lambda: RoutePolicy(
            auth_min_expires=1800,
            auth_max_expires=3600,
            use_path_addr=None,
            realm=REALM,
            sipmsg=False,
        )
    )
    nonce_secret: bytes = b"routing-test-secret"
    has_user_store: bool = True
    """With a user store, PASSWORDS decide; without one the routes use "xyz123" for all."""
    clock: float = NOW
    replies: list[bytes] = field(default_factory=list)
    relayed: list[Relayed] = field(default_factory=list)
    refused: set[bytes] = field(default_factory=set)
    """Message-IDs a next hop refused with 413 (message_refused)."""
    sessions: list[str] = field(default_factory=list)
    auth_results: list[bool] = field(default_factory=list)
    auth_faults: list[bool] = field(default_factory=list)
    """Per digest check: whether the [limits] count it as the client's failure."""
    self_uris: SelfUris | None = None
    """The URIs that name the relay (the relay route's to_us); None: none."""
    closed: list[str] = field(default_factory=list)
    """Reasons close_origin() was called with."""
    nodes: dict[str, str] = field(default_factory=dict)
    """Tokens other nodes of a cluster hold: token -> its URI there (node_of)."""

    @property
    def htable(self) -> ScriptHTable:
        assert self.ht is not None
        return ScriptHTable(self.ht, self.now)

    def now(self) -> float:
        return self.clock

    def to_us(self, uri: bytes) -> bool:
        return self.self_uris is not None and self.self_uris.names(uri)

    def new_session_id(self) -> str:
        return new_session_id()  # the relay's own (workers/sessids.py)

    def nonce_salt(self) -> bytes:
        return secrets.token_bytes(4)

    def user_ha1(self, username: str, realm: str) -> str | None:
        password = PASSWORDS.get(username)
        return None if password is None else dg.ha1(username, realm, password)

    def node_of(self, sessid: str) -> MsrpUri | None:
        uri = self.nodes.get(sessid)
        return None if uri is None else parse_uri(uri)

    def write_origin(self, data: bytes, flags: int, status: int = 0) -> None:
        self.replies.append(data)

    def relay(self, frame: Frame, data: bytes | Spliced, dest: Destination, flags: int) -> int:
        whole = data if isinstance(data, bytes) else data.joined()
        self.relayed.append(Relayed(whole, dest, flags))
        return 1

    def message_refused(self, frame: Frame) -> bool:
        return frame.message_id in self.refused

    def t_relay(self, frame: Frame, dest: Destination, flags: int) -> int:
        """No transaction layer in memory: a request is recorded as relay() sends it (the
        splice, its id kept), a response as it came; the live tests see the new ids."""
        try:
            if frame.method is None:
                data = frame.buf
            elif dest.node and dest.uri is not None:
                data = retarget(frame, dest.uri.raw.encode())
            else:
                data = relay_splice(frame)
        except LocalProtocolError:
            return -1
        self.relayed.append(Relayed(data, dest, flags))
        return 1

    def close_origin(self, reason: str) -> None:
        self.closed.append(reason)

    def auth_done(self, ok: bool, fault: bool = False) -> None:
        self.auth_results.append(ok)
        self.auth_faults.append(fault)

    def claim_session(self, user: str, sessid: str) -> tuple[int, str] | None:
        return None

    def session_saved(self, sessid: str, user: str = "") -> None:
        self.sessions.append(sessid)

    def take(self) -> tuple[list[Frame], list[Relayed]]:
        """The replies (parsed) and relays since the last take()."""
        replies, relayed = [parse(r) for r in self.replies], self.relayed
        self.replies, self.relayed = [], []
        return replies, relayed


def parse(data: bytes) -> Frame:
    reader = FrameReader()
    reader.receive_data(data)
    events = list(reader.events())
    assert len(events) == 1 and isinstance(events[0], Frame), events
    return events[0]


@dataclass
class Client:
    """One MSRP endpoint connected to the relay: its URI and the ConnInfo the relay sees."""

    name: str
    port: int
    conid: int
    sock: str = SOCK
    node: bool = False
    """Its connection is a link from another node of a cluster (ConnInfo.node)."""

    @property
    def uri(self) -> str:
        return f"msrp://127.0.0.1:{self.port}/{self.name}sess;tcp"

    @property
    def conn(self) -> ConnInfo:
        scheme = "msrps" if self.sock.startswith("tls:") else "msrp"
        return ConnInfo(f"{scheme}://127.0.0.1:{self.port}", self.sock, self.conid, self.node)


class Relay:
    """A routing script loaded with load_route, fed frames through the real Msrp object."""

    def __init__(self, route: str, env: FakeEnv) -> None:
        self.script = load_route(ROUTES / f"{route}.py", "ksr_msrp_event")
        self.env = env
        self._tid = 0

    def tid(self) -> str:
        self._tid += 1
        return f"tid{self._tid:05}"

    def feed(self, client: Client, data: bytes) -> tuple[list[Frame], list[Relayed]]:
        env: RouteEnv = self.env
        self.script.event(Msrp(parse(data), client.conn, env))
        return self.env.take()

    def auth(
        self, client: Client, *, expires: str | None = None, password: str | None = None
    ) -> Frame:
        """AUTH without credentials, then again answering the 401; the last reply."""
        replies, _ = self.feed(client, auth_frame(self.tid(), client, expires=expires))
        assert [r.code for r in replies] == [401]
        challenge = replies[0].header("WWW-Authenticate")
        assert challenge is not None
        header = authorization(client.name, challenge.decode(), password)
        data = auth_frame(self.tid(), client, expires=expires, authorization=header)
        replies, relayed = self.feed(client, data)
        assert len(replies) == 1 and relayed == []
        return replies[0]

    def session(self, client: Client) -> str:
        """Authenticate `client`; its Use-Path URI."""
        reply = self.auth(client)
        assert reply.code == 200
        use_path = reply.header("Use-Path")
        assert use_path is not None
        return use_path.decode()


def auth_frame(
    tid: str,
    client: Client,
    *,
    to_path: str = RELAY,
    expires: str | None = None,
    authorization: str | None = None,
) -> bytes:
    lines = [f"MSRP {tid} AUTH", f"To-Path: {to_path}", f"From-Path: {client.uri}"]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    return ("\r\n".join(lines) + f"\r\n-------{tid}$\r\n").encode()


def request(method: str, tid: str, to_path: str, from_path: str, body: bytes = b"hi") -> bytes:
    head = f"MSRP {tid} {method}\r\nTo-Path: {to_path}\r\nFrom-Path: {from_path}\r\n"
    head += "Message-ID: m1\r\nByte-Range: 1-2/2\r\n"
    if method == "SEND":
        head += "Content-Type: text/plain\r\n\r\n"
        return head.encode() + body + f"\r\n-------{tid}$\r\n".encode()
    return (head + f"-------{tid}$\r\n").encode()


def authorization(username: str, challenge: str, password: str | None = None) -> str:
    """The Authorization value answering `challenge` (RFC 2617 qop=auth, RFC 4976 §9.1)."""
    nonce = challenge.split('nonce="', 1)[1].split('"', 1)[0]
    creds = dg.Credentials(
        username=username,
        realm=REALM,
        nonce=nonce,
        uri=RELAY,
        response="",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    secret = PASSWORDS[username] if password is None else password
    response = dg.response_for(creds, dg.ha1(username, REALM, secret))
    return (
        f'Digest username="{username}", realm="{REALM}", nonce="{nonce}", uri="{RELAY}", '
        f'response="{response}", qop=auth, nc=00000001, cnonce="0a4f113b"'
    )
