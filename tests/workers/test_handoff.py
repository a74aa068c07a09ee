"""The handoff codec: round trips, every split of a stream, header errors, connection ids."""

from __future__ import annotations

import ast
import random
import time
from pathlib import Path

import pytest

import msrpd.workers.handoff as handoff_module
from msrpd.workers.handoff import (
    DEFAULT_MAX_PAYLOAD,
    HEADER,
    Handoff,
    HandoffDecoder,
    HandoffError,
    HandoffFlags,
    HandoffKind,
    conid_owner,
    conid_serial,
    encode_frame_parts,
    encode_handoff,
    encode_header,
    make_conid,
)

CONID = make_conid(3, 7, 123_456)
MESSAGES = [
    Handoff(HandoffKind.FRAME, CONID, 1, b"MSRP a SEND\r\n-------a$\r\n"),
    Handoff(HandoffKind.FRAME, CONID, 2, b"", HandoffFlags.MORE),
    Handoff(HandoffKind.GONE, CONID, 3),
    Handoff(HandoffKind.FRAME, 2**64 - 1, 2**32 - 1, bytes(range(256)) * 40),
    Handoff(HandoffKind.CLOSE, 0, 0),
    Handoff(HandoffKind.CLOSED, CONID, 1, (CONID - 1).to_bytes(8, "big") + (7).to_bytes(8, "big")),
    Handoff(HandoffKind.FRAME, CONID, 4, b"x", HandoffFlags.CLOSE_AFTER | HandoffFlags.MORE),
]
STREAM = b"".join(encode_handoff(m) for m in MESSAGES)


def feed_chunks(chunks: list[bytes], max_payload: int = DEFAULT_MAX_PAYLOAD) -> list[Handoff]:
    decoder = HandoffDecoder(max_payload)
    out: list[Handoff] = []
    for chunk in chunks:
        out += decoder.feed(chunk)
    assert decoder.buffered == 0
    return out


def random_splits(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 12)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: f"{m.kind.name}-{len(m.payload)}")
def test_round_trip_each_message(msg: Handoff) -> None:
    data = encode_handoff(msg)
    assert len(data) == HEADER.size + len(msg.payload)
    assert HandoffDecoder().feed(data) == [msg]


def test_decoded_fields_are_enum_members() -> None:
    [msg] = HandoffDecoder().feed(encode_handoff(MESSAGES[-1]))
    assert msg.kind is HandoffKind.FRAME
    assert type(msg.flags) is HandoffFlags
    assert type(msg.payload) is bytes


def test_frame_parts_match_whole_encoding() -> None:
    body = bytearray(b"0123456789")
    parts: list[bytes | memoryview] = [b"head ", memoryview(body)[2:6], b"", b" tail"]
    out = encode_frame_parts(CONID, 9, HandoffFlags.MORE, parts)
    assert out[1:] == parts  # the parts themselves, not copies
    expected = Handoff(HandoffKind.FRAME, CONID, 9, b"head 2345 tail", HandoffFlags.MORE)
    assert b"".join(out) == encode_handoff(expected)


def test_header_layout_is_network_order() -> None:
    data = encode_header(HandoffKind.GONE, 0, 0x0102030405060708, 0x0A0B0C0D, 0)
    assert data == bytes.fromhex("02 00 0000 0102030405060708 0a0b0c0d 00000000")


def test_whole_stream() -> None:
    assert feed_chunks([STREAM]) == MESSAGES


def test_byte_by_byte() -> None:
    assert feed_chunks([STREAM[i : i + 1] for i in range(len(STREAM))]) == MESSAGES


def test_every_two_way_split() -> None:
    for cut in range(len(STREAM) + 1):
        assert feed_chunks([STREAM[:cut], STREAM[cut:]]) == MESSAGES, cut


def test_random_splits() -> None:
    rng = random.Random(1)
    for _ in range(300):
        assert feed_chunks(random_splits(STREAM, rng)) == MESSAGES


def test_empty_feed_and_trailing_partial() -> None:
    decoder = HandoffDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(STREAM + STREAM[:5]) == MESSAGES
    assert decoder.buffered == 5
    assert decoder.feed(STREAM[5:]) == MESSAGES
    assert decoder.buffered == 0


BIG = [
    Handoff(HandoffKind.FRAME, CONID, 5, bytes(range(251)) * 1200, HandoffFlags.MORE),
    MESSAGES[0],
    Handoff(HandoffKind.FRAME, CONID, 6, b"y" * (1 << 20)),
    Handoff(HandoffKind.FRAME, CONID, 7, b"z" * (handoff_module.GATHER + 1)),
    MESSAGES[2],
]
BIG_STREAM = b"".join(encode_handoff(m) for m in BIG)


@pytest.mark.parametrize("step", [1000, 65_536, 262_144, 300_000, len(BIG_STREAM)])
def test_big_messages_in_reads_of_any_size(step: int) -> None:
    """A message over GATHER is joined from its reads once complete (issue 16): what comes
    before, after and between big ones, in the same read, is decoded in order."""
    decoder = HandoffDecoder()
    out: list[Handoff] = []
    fed = 0
    for at in range(0, len(BIG_STREAM), step):
        chunk = BIG_STREAM[at : at + step]
        out += decoder.feed(chunk)
        fed += len(chunk)
        consumed = sum(len(encode_handoff(m)) for m in out)
        assert decoder.buffered == fed - consumed
    assert out == BIG
    assert decoder.buffered == 0


def test_big_messages_in_random_splits() -> None:
    rng = random.Random(2)
    for _ in range(40):
        assert feed_chunks(random_splits(BIG_STREAM, rng)) == BIG


def test_byte_at_a_time_is_linear() -> None:
    """A quadratic buffer (re-joining or re-scanning what is buffered) would take minutes
    here: 256 KiB in one-byte feeds, then 20,000 small messages the same way."""
    big = encode_handoff(Handoff(HandoffKind.FRAME, 1, 1, b"z" * 256 * 1024))
    small = encode_handoff(Handoff(HandoffKind.GONE, 1, 2)) * 20_000
    for data, count in ((big, 1), (small, 20_000)):
        decoder = HandoffDecoder()
        feed = decoder.feed
        start = time.perf_counter()
        got = 0
        for i in range(len(data)):
            got += len(feed(data[i : i + 1]))
        assert got == count
        assert time.perf_counter() - start < 5.0
        assert len(decoder._buf) <= HEADER.size + 256 * 1024  # compacted as it went


def test_consumed_bytes_are_compacted() -> None:
    msgs = [Handoff(HandoffKind.FRAME, i, i, bytes([i % 256]) * 280) for i in range(3000)]
    data = b"".join(encode_handoff(m) for m in msgs)
    decoder = HandoffDecoder()
    out: list[Handoff] = []
    for i in range(0, len(data), 5000):
        out += decoder.feed(data[i : i + 5000])
        assert len(decoder._buf) < 4096 + 300 + 5000
        assert decoder._start < 4096 or decoder._start < decoder.buffered
    assert out == msgs


@pytest.mark.parametrize("kind", [0, max(HandoffKind) + 1, 255])
def test_unknown_kind(kind: int) -> None:
    data = HEADER.pack(kind, 0, 0, CONID, 1, 0)
    with pytest.raises(HandoffError, match="unknown handoff kind"):
        HandoffDecoder().feed(data)


def test_nonzero_reserved() -> None:
    data = HEADER.pack(1, 0, 0x8000, CONID, 1, 0)
    with pytest.raises(HandoffError, match="reserved"):
        HandoffDecoder().feed(data)


def test_oversize_is_refused_from_the_header_alone() -> None:
    decoder = HandoffDecoder(max_payload=100)
    assert decoder.feed(HEADER.pack(1, 0, 0, CONID, 1, 100) + b"a" * 100) != []
    with pytest.raises(HandoffError, match="over the limit"):
        decoder.feed(HEADER.pack(1, 0, 0, CONID, 1, 101))  # no payload bytes needed


@pytest.mark.parametrize("kind", [HandoffKind.GONE, HandoffKind.CLOSE])
def test_payload_on_gone_or_close(kind: HandoffKind) -> None:
    with pytest.raises(HandoffError, match="payload"):
        HandoffDecoder().feed(HEADER.pack(kind, 0, 0, CONID, 1, 3) + b"abc")


def test_error_keeps_messages_before_it_and_sticks() -> None:
    decoder = HandoffDecoder()
    good = encode_handoff(MESSAGES[0]) + encode_handoff(MESSAGES[2])
    decoder.feed(good[:7])
    with pytest.raises(HandoffError) as info:
        decoder.feed(good[7:] + HEADER.pack(200, 0, 0, 0, 0, 0) + encode_handoff(MESSAGES[0]))
    assert info.value.messages == [MESSAGES[0], MESSAGES[2]]
    assert isinstance(info.value, ValueError)
    with pytest.raises(HandoffError, match="failed earlier"):
        decoder.feed(encode_handoff(MESSAGES[0]))


def test_unknown_flag_bits_are_kept() -> None:
    # A newer generation of workers may add flags; the old one passes them on untouched.
    [msg] = HandoffDecoder().feed(HEADER.pack(1, 0x84, 0, CONID, 1, 0))
    assert int(msg.flags) == 0x84


def test_encode_refuses_bad_fields() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_handoff(Handoff(HandoffKind.FRAME, CONID, 2**32))
    with pytest.raises(ValueError, match="out of range"):
        encode_handoff(Handoff(HandoffKind.FRAME, -1, 0))
    with pytest.raises(ValueError, match="carries no payload"):
        encode_handoff(Handoff(HandoffKind.GONE, CONID, 0, b"x"))
    with pytest.raises(ValueError, match="out of range"):
        encode_frame_parts(CONID, 0, 256, [b"x"])


def test_conid_packing() -> None:
    conid = make_conid(255, 65535, 2**40 - 1)
    assert conid == 2**64 - 1
    assert conid_owner(conid) == (255, 65535)
    assert conid_serial(conid) == 2**40 - 1
    conid = make_conid(3, 2, 1)
    assert conid == (3 << 56) | (2 << 40) | 1
    assert (conid_owner(conid), conid_serial(conid)) == ((3, 2), 1)
    assert conid_owner(make_conid(0, 0, 0)) == (0, 0)


@pytest.mark.parametrize(
    ("slot", "generation", "serial"),
    [(256, 0, 0), (-1, 0, 0), (0, 65536, 0), (0, -1, 0), (0, 0, 2**40), (0, 0, -1)],
)
def test_conid_ranges(slot: int, generation: int, serial: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        make_conid(slot, generation, serial)


def test_codec_is_sans_io() -> None:
    banned = {"asyncio", "uvloop", "socket", "os", "time", "selectors", "multiprocessing"}
    tree = ast.parse(Path(handoff_module.__file__).with_name("handoff.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported & banned == set()
    assert "struct" in imported
