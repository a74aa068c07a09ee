"""Properties of the handoff decoder: any bytes, in any split, give messages or HandoffError,
nothing else, and it never buffers more than one header plus the payload limit."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from msrpd.workers.handoff import (
    _COMPACT_MIN,
    HEADER,
    Handoff,
    HandoffDecoder,
    HandoffError,
    HandoffFlags,
    HandoffKind,
    encode_handoff,
)

MAX_PAYLOAD = 64
BOUND = HEADER.size + MAX_PAYLOAD

messages = st.one_of(
    st.builds(
        Handoff,
        st.just(HandoffKind.FRAME),
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=MAX_PAYLOAD),
        st.integers(0, 255).map(HandoffFlags),
    ),
    st.builds(
        Handoff,
        st.sampled_from([HandoffKind.GONE, HandoffKind.CLOSE]),
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**32 - 1),
    ),
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def mutate(args: tuple[bytes, int, int, bytes]) -> bytes:
    data, at, cut, insert = args
    at %= len(data) + 1
    return data[:at] + insert + data[at + cut :]


valid_streams = st.lists(messages, max_size=8).map(
    lambda ms: b"".join(encode_handoff(m) for m in ms)
)
mutated_streams = st.tuples(
    valid_streams, st.integers(0, 10_000), st.integers(0, 4), st.binary(max_size=6)
).map(mutate)


def check(chunks: list[bytes]) -> list[Handoff]:
    decoder = HandoffDecoder(MAX_PAYLOAD)
    out: list[Handoff] = []
    for chunk in chunks:
        try:
            out += decoder.feed(chunk)
        except HandoffError as exc:
            assert all(isinstance(m, Handoff) for m in exc.messages)
            return out
        assert decoder.buffered <= BOUND
        # The consumed prefix is compacted away once it is _COMPACT_MIN or more bytes and at
        # least as long as what is left.
        assert len(decoder._buf) < max(_COMPACT_MIN, BOUND) + BOUND
    return out


@settings(max_examples=500)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=10))
def test_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    check(split(data, cuts))


@settings(max_examples=500)
@given(mutated_streams, st.lists(st.integers(0, 2000), max_size=10))
def test_mutated_streams(data: bytes, cuts: list[int]) -> None:
    check(split(data, cuts))


@settings(max_examples=300)
@given(st.lists(messages, max_size=8), st.lists(st.integers(0, 2000), max_size=10))
def test_valid_streams_round_trip(msgs: list[Handoff], cuts: list[int]) -> None:
    data = b"".join(encode_handoff(m) for m in msgs)
    assert check(split(data, cuts)) == msgs
