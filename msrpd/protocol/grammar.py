"""The parts of the RFC 4975 §9 grammar the reader checks, as compiled regexes.

Rules:
- First line: `MSRP SP transact-id SP method CRLF` or `MSRP SP transact-id SP 3DIGIT
  [SP comment] CRLF`. A third token of three digits makes a response, with or without a
  comment (RFC 4975 §9; Kamailio reads `MSRP x 200` as a request with method 200).
- transact-id: `ident` characters (RFC 4975 §9). The RFC asks for 4 to 32 of them; we accept 1
  to 64 because deployed clients send short ids and the end-line only needs the id verbatim.
- Methods: any token. `other-method` is upper case in the RFC, but answering an unknown or
  lower-case method (501) is the routing script's call, as in Kamailio.
- Header block: To-Path first, From-Path second, each exactly once (RFC 4975 §7.1, §9); every
  line `hname ":" hval CRLF`; values are utf8text, so no CTL but HTAB (RFC 4975 §9 and our
  checklist §1.7: accepting what a downstream parser refuses would let frames be smuggled).
  Header names are matched case-insensitively (RFC 4234 §2.3 quoted literals); a defined
  name not in canonical case is noted (hnames.py: the relay writes it canonically).
"""

from __future__ import annotations

import re

from .hnames import OTHER_NAMES

__all__ = [
    "DASHES",
    "FAST_HEAD",
    "FIRST_LINE",
    "FLAGS",
    "HEAD",
    "HEADER_LINE",
    "HEAD_ANY_CASE",
    "HNAME",
    "IDENT_CHARS",
    "LINE_TEXT",
    "RESPONSE_HINT",
    "SIP_START",
    "TID_PREFIX",
    "TOKEN_CHARS",
    "UTF8TEXT",
    "closes_end_line",
    "diagnose_head",
]

_IDENT = rb"[A-Za-z0-9][A-Za-z0-9.\-+%=]{0,63}"
_TOKEN = rb"[!#$%&'*+\-.0-9A-Z^_`a-z|~]+"
# Possessive (*+): header regexes never backtrack, so a hostile line costs linear time.
_UTF8TEXT = rb"[^\x00-\x08\x0a-\x1f\x7f]*+"
_HNAME = rb"[A-Za-z][!#$%&'*+\-.0-9A-Z^_`a-z|~]*+"

# Groups: 1 tid, 2 status code, 3 comment, 4 method.
FIRST_LINE = re.compile(
    rb"MSRP (" + _IDENT + rb") (?:([0-9]{3})(?: (" + _UTF8TEXT + rb"))?|(" + _TOKEN + rb"))"
)

# Whole values and lines, for diagnosis and for the writers' checks (RFC 4975 §9).
UTF8TEXT = re.compile(_UTF8TEXT)
HNAME = re.compile(_HNAME)
HEADER_LINE = re.compile(_HNAME + rb":" + _UTF8TEXT)  # one header line without its CRLF

# A first line that meant to be a response, to know whether a broken frame may be answered.
RESPONSE_HINT = re.compile(rb"MSRP [^ ]+ [0-9]{3}(?: |$)")

# Enough of a first line to know the transaction id, so a broken frame can still be answered.
TID_PREFIX = re.compile(rb"MSRP (" + _IDENT + rb")(?: |\r|\n|$)")


def _by_first_letter(names: tuple[bytes, ...], any_case: bool) -> bytes:
    """An alternation of `names` grouped by first letter: the regex engine rejects an
    alternative by its first character without entering it (a literal, or a class for
    `any_case`), so a line pays for the few names that start like it."""
    groups: dict[bytes, list[bytes]] = {}
    for name in names:
        groups.setdefault(name[:1].lower(), []).append(name)
    alternatives = []
    for first, same in groups.items():
        rest = b"|".join([re.escape(name[1:]) for name in same])
        start = b"[%s%s]" % (first.upper(), first) if any_case else same[0][:1]
        alternatives.append(start + (b"(?i:" if any_case else b"(?:") + rest + b")")
    return b"(?:" + b"|".join(alternatives) + b")"


# Groups: 1 To-Path value (leading blanks excluded, trailing ones kept), 2 its first URI,
# 3 From-Path value, 4 its first URI. An empty path value does not match.
_FIRST_URI = rb"([^\x00-\x20\x7f]++)"


def _paths(to_path: bytes, from_path: bytes) -> bytes:
    value = rb":[ \t]*+(" + _FIRST_URI + _UTF8TEXT + rb")\r\n"
    return to_path + value + from_path + value


# HEAD: every defined header name in canonical case (hnames.py), the usual head: they are
# matched as literals, then any other name that is none of them in any case (an extension
# header, RFC 4975 §12). HEAD_ANY_CASE: names in any case (RFC 4234 §2.3), tried only when
# HEAD fails: the frame is well formed if it matches, and its head is rebuilt when relayed.
_DEFINED_ANY_CASE = _by_first_letter((b"To-Path", b"From-Path", *OTHER_NAMES), True)
_HEADERS = (
    _paths(b"To-Path", b"From-Path")
    + rb"(?:(?:"
    + _by_first_letter(OTHER_NAMES, False)
    + rb":|(?=[A-Za-z])(?!"
    + _DEFINED_ANY_CASE
    + rb"[ \t]*:)"
    + _HNAME
    + rb":)"
    + _UTF8TEXT
    + rb"\r\n)*+"
)
HEAD = re.compile(_HEADERS)
HEAD_ANY_CASE = re.compile(
    _paths(rb"(?i:to-path)", rb"(?i:from-path)")
    + rb"(?:(?!(?i:to-path|from-path)[ \t]*:)"
    + _HNAME
    + rb":"
    + _UTF8TEXT
    + rb"\r\n)*+"
)


def _keeping(allowed: bytes) -> bytes:
    """A bytes.translate table that keeps the bytes of `allowed` and changes every other one:
    `x.translate(t) == x` says, in one C loop, that x holds only allowed bytes."""
    return bytes(b if b in allowed else (b + 1) % 256 for b in range(256))


_LETTERS_DIGITS = bytes(range(48, 58)) + bytes(range(65, 91)) + bytes(range(97, 123))
# The reader's fast path (fastpath.py) checks a head with these tables instead of regex
# classes: a class costs the regex engine ~40 instructions a byte, translate ~4.
LINE_TEXT = _keeping(bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)))
"""utf8text without HTAB: the bytes a head line the fast path reads may hold. HTAB is legal
(RFC 4975 §9) but rare: such a head goes to the state machine."""
IDENT_CHARS = _keeping(_LETTERS_DIGITS + b".-+%=")
"""The characters of `ident` (RFC 4975 §9 transact-id)."""
TOKEN_CHARS = _keeping(_LETTERS_DIGITS + b"!#$%&'*+-.^_`|~")
"""The characters of `token` (RFC 4975 §9 methods, and header names after their first letter)."""

# The reader's fast path under the interpreter (fastregex.py): a whole well-formed head in
# one match, up to what follows it: the blank line (group 9, a body follows) or the dashes
# of a bodiless frame's end-line.
# Groups: 1 tid, 2 code, 3 comment, 4 method, 5-8 as HEAD's 1-4, 9 separator. A head
# that only HEAD_ANY_CASE takes is read by the reader's state machine (partial.py).
FAST_HEAD = re.compile(
    rb"MSRP ("
    + _IDENT
    + rb") (?:([0-9]{3})(?: ("
    + _UTF8TEXT
    + rb"))?|("
    + _TOKEN
    + rb"))\r\n"
    + _HEADERS
    + rb"(\r\n|-------)"
)

# A SIP request or response start line (RFC 3261 §7.1, §7.2) on the shared port.
SIP_START = re.compile(rb"(?:[A-Z][A-Z_\-]* [^ \r\n]+ SIP/2\.0|SIP/2\.0 [0-9]{3}(?: [^\r\n]*)?)")

_PATH_NAMES = (b"to-path", b"from-path")

# The end-line: "-------" transact-id continuation-flag CRLF (RFC 4975 §9).
DASHES = b"-------"
FLAGS = b"$+#"


def closes_end_line(buf: bytes | bytearray, end: int) -> bool:
    """Whether buf[end - 3:end] is a continuation flag and CRLF, the tail of an end-line."""
    return buf[end - 3] in FLAGS and buf[end - 2] == 13 and buf[end - 1] == 10


def diagnose_head(block: bytes) -> str:
    """Say why a header block failed HEAD. Only called on the error path."""
    lines = block.split(b"\r\n")[:-1]
    names: list[bytes] = []
    for number, line in enumerate(lines, start=1):
        name, colon, value = line.partition(b":")
        if not colon:
            return f"header line {number} has no colon"
        if not HNAME.fullmatch(name):
            return f"header line {number} has an invalid name {name[:40]!r}"
        if not UTF8TEXT.fullmatch(value):
            return f"header {name[:40]!r} holds a control character"
        names.append(name.lower())
    if not names or names[0] != b"to-path":
        return "To-Path must be the first header (RFC 4975 §7.1)"
    if len(names) < 2 or names[1] != b"from-path":
        return "From-Path must be the second header (RFC 4975 §7.1)"
    for path in _PATH_NAMES:
        if names.count(path) > 1:
            return f"{path.decode()} appears more than once"
    if b"\n" in block.replace(b"\r\n", b"") or b"\r" in block.replace(b"\r\n", b""):
        return "bare CR or LF in the header block (RFC 4975 §9 needs CRLF)"
    return "malformed header block"
