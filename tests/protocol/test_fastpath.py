"""Differential test of the reader's fast path against the regex path (issue 16).

Property, for every buffer (corpus frames, generated heads and their mutations, every prefix
of each): fastpath.read_whole_frame (and read_frame_bytes, the same for a read as it came, on
the same bytes; and either with a PathMemo, new, holding these bytes' path lines, or shared
by every buffer the test reads) either declines (None) or returns exactly the Frame the
regex path (fastregex.py, the only one before issue 16) returns. It declines a frame the regex
reads only when the head holds an HTAB or is longer than the bytes it looks at; for those the state
machine, which then reads the frame, must give that same Frame (or the same InvalidFrame for
a path that does not parse), so the reader's events are unchanged on every input.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msrpd.protocol.events import InvalidFrame
from msrpd.protocol.fastpath import _PREFIX, PathMemo, read_frame_bytes, read_whole_frame
from msrpd.protocol.fastregex import read_whole_frame_regex
from msrpd.protocol.frame import Frame
from msrpd.protocol.hnames import OTHER_NAMES
from msrpd.protocol.reader import FrameReader
from msrpd.protocol.status import Status
from msrpd.protocol.uri import PathCheck

from .corpus import CASES

MAX_BODIES = (0, 5, 64, 1 << 20)
SHARED = PathMemo()  # the path lines of whichever frame was read last with it

TO = b"msrp://127.0.0.1:2855/s1a2b3;tcp msrp://127.0.0.1:7001/bob;tcp"
FROM = b"msrp://127.0.0.1:7000/alice;tcp"


def fields(frame: Frame) -> tuple[object, ...]:
    return (
        type(frame).__name__,
        frame.buf,
        frame.tid,
        frame.method,
        frame.code,
        frame.reason,
        frame.hdr_end,
        frame.body_start,
        frame.end_start,
        frame.flag,
        frame.to_span,
        frame.from_span,
        frame.to_count,  # from the memo on a hit (PathMemo.to_count), else counted
    )


def state_machine_first(data: bytes, limits_body: int) -> object:
    """The first event the reader's state machine gives for `data` (one byte first, so
    the fast path declines, then the rest)."""
    from msrpd.protocol.limits import ReaderLimits

    reader = FrameReader(ReaderLimits(max_body=limits_body))
    reader.receive_data(data[:1])
    first = list(reader.events())
    reader.receive_data(data[1:])
    return (first + list(reader.events()))[0]


def check(data: bytes) -> None:
    """The property above, for `data` whole and for every prefix of it."""
    for max_body in MAX_BODIES:
        for cut in range(len(data) + 1):
            check_buffer(data[:cut], max_body)


def check_buffer(data: bytes, max_body: int) -> None:
    new = read_whole_frame(bytearray(data), max_body)
    old = read_whole_frame_regex(bytearray(data), max_body)
    # The same bytes as a read (bytes, not the reader's bytearray): the same answers.
    direct, direct_old = read_frame_bytes(data, max_body), read_whole_frame_regex(data, max_body)
    assert (direct is None) == (new is None), data
    assert (direct_old is None) == (old is None), data
    if direct is not None and new is not None:
        assert fields(direct) == fields(new), data
        assert direct.buf is data or len(direct.buf) < len(data)  # a whole read is not copied
    if direct_old is not None and old is not None:
        assert fields(direct_old) == fields(old), data
    # With the connection's memo of path lines: the same answers whether it holds these
    # bytes' lines (the second read), another frame's (SHARED), or none (the first read).
    memo = PathMemo()
    for memo_now in (memo, memo, SHARED) if new is not None else (SHARED,):
        remembered = read_frame_bytes(data, max_body, memo_now)
        assert (remembered is None) == (new is None), data
        if remembered is not None and new is not None:
            assert fields(remembered) == fields(new), data
    if new is not None:
        lines_end = new.buf.index(b"\r\n", new.from_span[2]) + 2
        assert memo.hit and memo.block == new.buf[new.hdr_start : lines_end], data
    if new is not None:
        assert old is not None, data
        assert fields(new) == fields(old), data
        return
    if old is None:
        return
    head = old.buf[: old.hdr_end]
    # The heads it leaves: with an HTAB, or beyond the bytes it looks at.
    assert b"\t" in head or old.hdr_end + 80 > _PREFIX
    event = state_machine_first(data, max_body)
    problem = PathCheck().problem(old.buf, old.to_span, old.from_span)
    if problem is None:
        assert isinstance(event, Frame), (data, event)
        assert fields(event) == fields(old), data
    else:
        assert isinstance(event, InvalidFrame), (data, event)
        want = (old.tid, Status.UNINTELLIGIBLE, problem, old.is_request, head)
        assert (event.tid, event.status, event.reason, event.is_request, event.head) == want


def frame(first: bytes, *lines: bytes, body: bytes | None = b"hi", tid: bytes = b"t1") -> bytes:
    head = first + b"\r\n" + b"".join(line + b"\r\n" for line in lines)
    if body is None:
        return head + b"-------" + tid + b"$\r\n"
    return head + b"\r\n" + body + b"\r\n-------" + tid + b"$\r\n"


def paths(*extra: bytes) -> tuple[bytes, ...]:
    return (b"To-Path: " + TO, b"From-Path: " + FROM, *extra)


# Hand-picked heads at the edges of the grammar (RFC 4975 §9), each read by both paths.
EDGES = [
    frame(b"MSRP t1 SEND", *paths(b"Message-ID: m", b"Byte-Range: 1-2/2", b"Content-Type: a/b")),
    frame(b"MSRP t1 SEND", *paths(), body=None),
    frame(b"MSRP t1 200 OK", *paths(), body=None),
    frame(b"MSRP t1 200", *paths(), body=None),
    frame(b"MSRP t1 200 ", *paths(), body=None),
    frame(b"MSRP t1 200  two  spaces ", *paths(), body=None),
    frame(b"MSRP t1 2000", *paths(), body=None),
    frame(b"MSRP t1 20", *paths(), body=None),
    frame(b"MSRP t1 200x", *paths(), body=None),
    frame(b"MSRP t1 2x0 OK", *paths(), body=None),
    frame(b"MSRP t1 send", *paths()),
    frame(b"MSRP t1 SE ND", *paths()),
    frame(b"MSRP t1 SEND ", *paths()),
    frame(b"MSRP t1  SEND", *paths()),
    frame(b"MSRP t1 S(END", *paths()),
    frame(b"MSRP t1 200 \xc3\xa9t\xc3\xa9", *paths(), body=None),
    frame(b"MSRP t1 200 \x7f", *paths(), body=None),
    frame(b"MSRP t1 200 a\tb", *paths(), body=None),
    frame(b"MSRP " + b"a" * 64 + b" SEND", *paths(), tid=b"a" * 64),
    frame(b"MSRP " + b"a" * 65 + b" SEND", *paths(), tid=b"a" * 65),
    frame(b"MSRP .t SEND", *paths(), tid=b".t"),
    frame(b"MSRP a.-+%=b SEND", *paths(), tid=b"a.-+%=b"),
    frame(b"MSRP a_b SEND", *paths(), tid=b"a_b"),
    frame(b"MSRP  SEND", *paths(), tid=b""),
    frame(b"msrp t1 SEND", *paths()),
    frame(b"MSRP t1 SEND", b"To-Path:" + TO, b"From-Path:" + FROM),
    frame(b"MSRP t1 SEND", b"To-Path:   " + TO + b"  ", b"From-Path: " + FROM + b" "),
    frame(b"MSRP t1 SEND", b"To-Path:\t" + TO + b"\t", b"From-Path: " + FROM),
    frame(b"MSRP t1 SEND", b"To-Path: a\tb c", b"From-Path: " + FROM),
    frame(b"MSRP t1 SEND", b"To-Path: ", b"From-Path: " + FROM),
    frame(b"MSRP t1 SEND", b"To-Path:", b"From-Path: " + FROM),
    frame(b"MSRP t1 SEND", b"To-Path: \xff\xfe x", b"From-Path: " + FROM),
    frame(b"MSRP t1 SEND", b"to-path: " + TO, b"From-Path: " + FROM),
    frame(b"MSRP t1 SEND", b"To-Path : " + TO, b"From-Path: " + FROM),
    frame(b"MSRP t1 SEND", b"From-Path: " + FROM, b"To-Path: " + TO),
    frame(b"MSRP t1 SEND", b"To-Path: " + TO),
    frame(b"MSRP t1 SEND", *paths(b"To-Path: " + TO)),
    frame(b"MSRP t1 SEND", *paths(b"from-path: " + FROM)),
    frame(b"MSRP t1 SEND", *paths(b"message-id: m")),
    frame(b"MSRP t1 SEND", *paths(b"Message-IDx: m")),
    frame(b"MSRP t1 SEND", *paths(b"Message-ID : m")),
    frame(b"MSRP t1 SEND", *paths(b"Message-ID:")),
    frame(b"MSRP t1 SEND", *paths(b"X-Foo:bar", b"x:", b"A!#$%&'*+-.^_`|~z: v")),
    frame(b"MSRP t1 SEND", *paths(b"1abc: v")),
    frame(b"MSRP t1 SEND", *paths(b"X(y): v")),
    frame(b"MSRP t1 SEND", *paths(b": v")),
    frame(b"MSRP t1 SEND", *paths(b"NoColon")),
    frame(b"MSRP t1 SEND", *paths(b"-x: v")),
    frame(b"MSRP t1 SEND", *paths(b"X: a\x00b")),
    frame(b"MSRP t1 SEND", *paths(b"X: a\x1bb")),
    frame(b"MSRP t1 SEND", *paths(b"X: a\rb")),
    frame(b"MSRP t1 SEND", *paths(b"X: a\nb")),
    frame(b"MSRP t1 SEND", *paths(b"X: a\r\r")),
    frame(b"MSRP t1 SEND", *paths(b"X: " + b"v" * 5000)),
    frame(b"MSRP t1 SEND", *paths(*[b"X-%d: v" % i for i in range(300)])),
    frame(b"MSRP t1 SEND", *paths(), body=b""),
    frame(b"MSRP t1 SEND", *paths(), body=b"\r\n-------t2$\r\n-x\r\n-------t1"),
    frame(b"MSRP t1 SEND", *paths(), body=b"-------t1$"),
    frame(b"MSRP t1 SEND", *paths(), body=b"x" * 100),
    frame(b"MSRP t1 SEND", *paths(), body=b"line\r\n" * 30),
    frame(b"MSRP t1 SEND", *paths(), body=b"x" * 2000),
    frame(b"MSRP t1 SEND", *paths(b"X: y" * 240)),
    frame(b"MSRP t1 SEND", *paths(*[b"X-%d: v" % i for i in range(8)]), body=None),
    frame(b"MSRP t1 SEND", *paths(*[b"X-%d: v" % i for i in range(9)]), body=None),
    b"MSRP t1 SEND\r\nTo-Path: a\r\nFrom-Path: b\r\n-------t1x\r\n",
    b"MSRP t1 SEND\r\nTo-Path: a\r\nFrom-Path: b\r\n-------t2$\r\n",
    b"MSRP t1 SEND\r\nTo-Path: a\r\nFrom-Path: b\r\n-------t1$\n",
    b"MSRP t1 SEND\r\nTo-Path: a\r\nFrom-Path: b\r\n-----\r\n",
    b"MSRP t1 SEND\r\nTo-Path: a\r\nFrom-Path: b\r\n\r\nbody-------t1$\r\n",
    b"MSRP t1 SEND\r\nTo-Path: a\r\nFrom-Path: b\n\r\n-------t1$\r\n",
    b"MSRP t1 SEND\r\nTo-Path: a\r\nFrom-Path: b\r\r\n-------t1$\r\n",
    b"MSRP t1 SEND\nTo-Path: a\r\nFrom-Path: b\r\n-------t1$\r\n",
    b"MSRP t1 SEND\r\nTo-Path: a\r\nFrom-Path: b\r\n-------t1$\r\nMSRP t2 SEND\r\n",
    b"MSRP t1 SEND\r\n\r\n-------t1$\r\n",
    b"MSRP t1 SEND\r\n-------t1$\r\n",
]


def test_corpus_and_edges_every_prefix() -> None:
    for data in [case.data for case in CASES] + EDGES:
        check(data)


# What may follow a head cut exactly where the fast path stops cutting lines: a line with no
# colon, a blank line, end-lines of this tid and another, one more header.
AFTER_THE_CUT = [
    b"XY-------t1$\r\n",
    b"\r\nhi\r\n-------t1$\r\n",
    b"-------t1$\r\n",
    b"-------t2$\r\n",
    b"Y: z\r\n\r\nhi\r\n-------t1$\r\n",
]


def test_a_head_cut_at_the_prefix_is_read_as_the_regex_reads_it() -> None:
    """A CRLF ending exactly at byte _PREFIX: the bytes after it are not looked at, and the
    end of what is must not be taken for the blank line (the head goes on: its next line is
    the state machine's to check). And a head of many lines (the line cut an earlier fast
    path made, at 12) with what may follow its last line."""
    start = b"MSRP t1 SEND\r\n" + b"".join(line + b"\r\n" for line in paths())
    pad = b"X: " + b"v" * (_PREFIX - len(start) - 5) + b"\r\n"
    assert len(start + pad) == _PREFIX
    lines = b"".join(b"H%d: v\r\n" % i for i in range(9))
    for head in (start + pad, start + lines):
        for after in AFTER_THE_CUT:
            check(head + after)
        bad = head + AFTER_THE_CUT[0]
        assert read_whole_frame(bytearray(bad), 1 << 20) is None  # "XY-..." has no colon


def test_the_usual_frames_take_the_fast_path() -> None:
    """The fast path reads the frames a relay sees all day (else it would be no path)."""
    many = [b"X-%d: v" % i for i in range(20)]
    usual = [
        *EDGES[:5],
        frame(b"MSRP t1 SEND", *paths(), body=b"line\r\n" * 30),
        frame(b"MSRP t1 SEND", *paths(*many)),
        frame(b"MSRP t1 SEND", *paths(*many), body=None),
    ]
    for data in usual:
        assert read_whole_frame(bytearray(data), 1 << 20) is not None
    reads = [c.data for c in CASES if read_whole_frame_regex(bytearray(c.data), 1 << 20)]
    assert reads
    for data in reads:
        assert read_whole_frame(bytearray(data), 1 << 20) is not None or b"\t" in data, data


# -- generated heads --------------------------------------------------------------------------

# Mostly what the grammar allows, now and then what it does not: a head is read only when
# every one of its pieces is right.
_NAMES = [*OTHER_NAMES, b"X-Foo", b"x"] * 3 + [b"To-Path", b"From-Path", b"1x", b"-x", b"A b", b""]
names = st.sampled_from(_NAMES).flatmap(
    lambda n: st.sampled_from([n] * 12 + [n.lower(), n.upper(), n.swapcase()])
)
blanks = st.sampled_from([b"", b" ", b"  "] * 6 + [b"\t", b" \t "])
odd = st.sampled_from([b"\x00", b"\x01", b"\t", b"\x0b", b"\x1f", b"\x7f", b"\r", b"\n", b"\x80"])
clean = [TO, FROM, b"m1", b"1-2/2", b"text/plain", b"a b", b"x" * 300, b"\xc3\xa9", b"a  b "]
texts = st.one_of(
    *[st.sampled_from(clean)] * 8,
    st.binary(max_size=12),
    st.lists(st.one_of(st.sampled_from([b"a", b" ", b"msrp://h:1/s;tcp"]), odd), max_size=6).map(
        b"".join
    ),
)
line_ends = st.sampled_from([b"\r\n"] * 60 + [b"\n", b"\r", b"\r\r\n", b"\n\r"])
tids = st.one_of(
    *[st.sampled_from([b"t1", b"a" * 64, b"a=b", b"Z.-+%=9"])] * 6,
    st.sampled_from([b"a" * 65, b"", b".x", b"a b", b"a\tb"]),
    st.binary(min_size=1, max_size=6),
)
starts = st.one_of(
    st.tuples(st.sampled_from([b"SEND", b"REPORT", b"200", b"2000", b"x(y)", b""])).map(
        lambda t: t[0]
    ),
    st.tuples(st.sampled_from([b"200", b"481", b"20a"]), texts).map(lambda t: t[0] + b" " + t[1]),
)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    tid = draw(tids)
    out = [b"MSRP " + tid + b" " + draw(starts) + draw(line_ends)]
    lines = [(b"To-Path", draw(texts)), (b"From-Path", draw(texts))]
    lines = draw(st.sampled_from([lines] * 8 + [lines[:1], lines[::-1]]))
    lines += draw(st.lists(st.tuples(names, texts), max_size=4))
    for name, value in lines:
        colon = draw(st.sampled_from([b":"] * 20 + [b" :", b""]))
        out.append(name + colon + draw(blanks) + value + draw(blanks) + draw(line_ends))
    end_tid = draw(st.sampled_from([tid] * 8 + [tid + b"x", b"t9"]))
    flag = draw(st.sampled_from([b"$", b"+", b"#"] * 4 + [b"x"]))
    endline = b"-------" + end_tid + flag + draw(line_ends)
    if draw(st.booleans()):
        out.append(b"\r\n" + draw(st.binary(max_size=20)) + b"\r\n")
    out.append(endline)
    return b"".join(out) + draw(st.sampled_from([b"", b"MSRP t2 SEND\r\n", b"\r\n"]))


token_chars = st.sampled_from(b"!#$%&'*+-.^_`|~azAZ09")
ident_chars = st.sampled_from(b"azAZ09.-+%=")
value_bytes = st.sampled_from(b" azAZ09:;/<>@\x80\xc3\xa9\xff~")


def joined(chars: st.SearchStrategy[int], low: int, high: int) -> st.SearchStrategy[bytes]:
    return st.lists(chars, min_size=low, max_size=high).map(bytes)


@st.composite
def good_heads(draw: st.DrawFn) -> bytes:
    """Whole frames the grammar allows (HTAB aside): both paths must read them alike."""
    tid = draw(st.sampled_from(b"azAZ09").map(lambda c: bytes((c,)))) + draw(
        joined(ident_chars, 0, 63)
    )
    kind = draw(
        st.one_of(
            joined(token_chars, 1, 8),
            st.integers(100, 999).map(b"%d".__mod__),
            st.tuples(st.integers(0, 999), joined(value_bytes, 0, 20)).map(
                lambda t: b"%03d %s" % t
            ),
        )
    )
    lines = [b"MSRP " + tid + b" " + kind]
    for name in (b"To-Path", b"From-Path"):
        uri = draw(joined(value_bytes.filter(lambda c: c != 32), 1, 60))
        more = draw(joined(value_bytes, 0, 60))
        spaces = draw(st.sampled_from([b"", b" ", b"   "]))
        lines.append(name + b":" + spaces + uri + more)
    for _ in range(draw(st.integers(0, 5))):
        name = draw(
            st.one_of(
                st.sampled_from(OTHER_NAMES),
                st.tuples(st.sampled_from(b"XYZxyz"), joined(token_chars, 0, 12)).map(
                    lambda t: bytes((t[0],)) + t[1]
                ),
            )
        )
        lines.append(name + b":" + draw(joined(value_bytes, 0, 40)))
    body = draw(st.one_of(st.none(), st.binary(max_size=80)))
    flag = draw(st.sampled_from([b"$", b"+", b"#"]))
    head = b"".join(line + b"\r\n" for line in lines)
    if body is None:
        return head + b"-------" + tid + flag + b"\r\n"
    return head + b"\r\n" + body + b"\r\n-------" + tid + flag + b"\r\n"


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    for where, cut, insert in edits:
        at = where % (len(data) + 1)
        data = data[:at] + insert + data[at + cut :]
    return data


edits = st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 3), st.binary(max_size=3)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(heads())
def test_generated_heads(data: bytes) -> None:
    check(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(good_heads())
def test_generated_good_heads(data: bytes) -> None:
    check(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(heads(), good_heads(), st.sampled_from(EDGES)), edits)
def test_mutated_heads(data: bytes, changes: list[tuple[int, int, bytes]]) -> None:
    check(mutate(data, changes))
