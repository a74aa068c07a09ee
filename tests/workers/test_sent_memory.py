"""SentMemory's sync with its peers (gone.py): past handoff_memory, each peer holding records is
asked (HELD) which of our frames it still holds; its answer (HOLDING) drops exactly the
records of frames sent to it before the question and not held. A peer that never answers
cannot make memory grow past the hard cap: the oldest go then, counted. And the codec of
HELD and HOLDING (handoff.py), and the answer's payload (held.py)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from msrpd.workers.gone import HARD_CAP, SENT_OVERHEAD, STALE_ROUNDS, Sent, SentMemory
from msrpd.workers.handoff import (
    Handoff,
    HandoffDecoder,
    HandoffError,
    HandoffKind,
    encode_handoff,
    encode_header,
)
from msrpd.workers.held import held_tokens
from msrpd.workers.stopstate import StopState

A, B = Path("/run/handoff-1-1.sock"), Path("/run/handoff-2-1.sock")
HEAD = b"h" * (350 - SENT_OVERHEAD)
WEIGHT = 350
LIMIT = 10 * WEIGHT


class Memory:
    """A SentMemory of LIMIT bytes and the questions it asked."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.stop = StopState()
        self.memory = SentMemory(self.stop, limit)
        self.asks: list[tuple[Path, int]] = []
        self.memory.ask = lambda path, question: self.asks.append((path, question))

    def hand(self, dest: Path | None, n: int = 1) -> list[int]:
        """`n` frames handed to the worker at `dest`: their tokens."""
        return [self.memory.new_token(Sent(b"t", "p", 1, HEAD, None, dest)) for _ in range(n)]

    def answer(self, question: int, held: list[int]) -> None:
        self.memory.holding(question, struct.pack(f"!{len(held)}I", *held))

    def question(self, path: Path) -> int:
        (question,) = [q for p, q in self.asks if p == path]
        return question

    def kept(self, tokens: list[int]) -> list[int]:
        return [t for t in tokens if t in self.memory.sent]


def test_records_go_exactly_when_the_peer_no_longer_holds_their_frames() -> None:
    m = Memory()
    to_a, to_b = m.hand(A, 5), m.hand(B, 5)
    assert not m.asks  # at the limit, not past it
    last = m.hand(A)  # past it: both peers asked; this frame goes out after the question
    assert sorted(p for p, _ in m.asks) == [A, B]
    later = m.hand(A, 2) + m.hand(B, 1)  # sent after the question: no answer covers them
    m.answer(m.question(A), [to_a[1], to_a[3], to_b[0]])  # B's token from A means nothing
    assert m.kept(to_a) == [to_a[1], to_a[3]]
    assert m.kept(to_b) == to_b  # B has not answered yet
    assert m.kept(last + later) == last + later
    m.answer(m.question(B), [to_b[4]])
    assert m.kept(to_b) == [to_b[4]]
    assert m.kept(last + later) == last + later
    assert m.memory.weight == WEIGHT * len(m.memory.sent)
    # A GONE for a dropped record finds nothing; for a kept one, its record.
    assert m.memory.take(to_a[0]) is None
    assert m.memory.take(to_a[1]) is not None
    assert m.memory.evicted == 0


def test_a_peer_holding_everything_is_asked_again_only_after_a_quarter_limit_more() -> None:
    m = Memory()
    to_a = m.hand(A, 11)
    m.answer(m.question(A), to_a)
    assert m.kept(to_a) == to_a
    m.asks.clear()
    m.hand(A, LIMIT // 4 // WEIGHT)
    assert not m.asks
    m.hand(A)
    assert [p for p, _ in m.asks] == [A]


def test_records_sent_through_a_move_go_with_any_answer_once_older_than_the_question() -> None:
    m = Memory()
    moved = m.hand(None, 3)
    to_a = m.hand(A, 8)
    assert [p for p, _ in m.asks] == [A]  # nobody to ask about the moved ones
    m.answer(m.question(A), to_a)
    assert m.kept(moved) == [] and m.kept(to_a) == to_a


def test_a_peer_that_never_answers_cannot_grow_memory_past_the_hard_cap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = Memory()
    tokens = m.hand(A, 100)
    cap = HARD_CAP * LIMIT
    assert m.memory.weight <= cap
    kept = len(m.memory.sent)
    assert kept >= (cap - LIMIT // 4) // WEIGHT
    assert m.kept(tokens) == tokens[-kept:]  # the oldest went
    assert m.memory.evicted == 100 - kept
    assert "relayed frames forgotten" in caplog.text
    # Unanswered questions are forgotten after STALE_ROUNDS rounds, and A asked again.
    assert all(p == A for p, _ in m.asks)
    assert len({q for _, q in m.asks}) == len(m.asks) > 1
    stale = m.asks[0][1]
    assert stale not in m.memory.asked
    m.answer(stale, [])  # too late: ignored
    assert m.kept(tokens) == tokens[-kept:]
    assert len(m.memory.asked) <= STALE_ROUNDS


def test_nothing_is_asked_or_dropped_during_a_stop() -> None:
    m = Memory()
    m.stop.stopping = True
    tokens = m.hand(A, 100)
    assert not m.asks and m.kept(tokens) == tokens and m.memory.evicted == 0


def test_held_and_holding_codec() -> None:
    payload = struct.pack("!3I", 7, 0xFFFFFFFF, 1)
    held = Handoff(HandoffKind.HELD, 0, 42)
    holding = Handoff(HandoffKind.HOLDING, 0, 42, payload)
    decoder = HandoffDecoder()
    assert decoder.feed(encode_handoff(held) + encode_handoff(holding)) == [held, holding]
    with pytest.raises(ValueError):
        encode_handoff(Handoff(HandoffKind.HELD, 0, 1, b"xxxx"))
    with pytest.raises(HandoffError, match="not whole u32 tokens"):
        HandoffDecoder().feed(encode_header(HandoffKind.HOLDING, 0, 0, 1, 3) + b"abc")


def test_held_tokens_names_only_that_links_frames_once() -> None:
    sources = [(5, 1), 0x101, (6, 2), (5, 9), None, (5, 1), (5, 0xFFFFFFFF)]
    payload = held_tokens(5, sources)
    assert sorted(struct.unpack(f"!{len(payload) // 4}I", payload)) == [1, 9, 0xFFFFFFFF]
    assert held_tokens(7, sources) == b""
