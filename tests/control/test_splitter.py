"""DocumentSplitter: JSON documents cut out of the fifo's byte stream, memory bounded."""

from __future__ import annotations

import json

import pytest

from msrpd.control.splitter import Discarded, DocumentSplitter

DOCS = [
    b'{"jsonrpc":"2.0","method":"core.ps","id":1,"reply_name":"r1"}',
    b'{"a":"}{][","b":"\\"}","c":[1,{"d":[]}],"e":"\\\\"}',
    b'[{"x":1},{"y":"]"}]',
    b'{\n  "pretty": [\n    1,\n    2\n  ]\n}',
]


def feed_all(splitter: DocumentSplitter, data: bytes, step: int) -> list[bytes | Discarded]:
    out: list[bytes | Discarded] = []
    for i in range(0, len(data), step):
        out.extend(splitter.feed(data[i : i + step]))
    return out


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 100_000])
def test_concatenated_and_newline_separated_documents_at_any_split(step: int) -> None:
    stream = DOCS[0] + DOCS[1] + b"\n" + DOCS[2] + b"\r\n\n  " + DOCS[3] + b"\n"
    out = feed_all(DocumentSplitter(), stream, step)
    assert out == DOCS
    for doc in out:
        assert isinstance(doc, bytes)
        json.loads(doc)


def test_partial_document_waits_for_the_rest() -> None:
    splitter = DocumentSplitter()
    assert splitter.feed(DOCS[0][:10]) == []
    assert splitter.partial
    assert splitter.feed(DOCS[0][10:]) == [DOCS[0]]
    assert not splitter.partial


def test_escaped_quote_split_across_feeds() -> None:
    splitter = DocumentSplitter()
    assert splitter.feed(b'{"a":"x\\') == []
    assert splitter.feed(b'"}"}') == [b'{"a":"x\\"}"}']


def test_garbage_line_is_dropped_up_to_the_newline() -> None:
    splitter = DocumentSplitter()
    out = splitter.feed(b"hello world\n" + DOCS[0])
    assert out == [Discarded("not a JSON object", b"hello world\n"), DOCS[0]]


def test_garbage_without_newline_keeps_being_dropped_until_one_comes() -> None:
    splitter = DocumentSplitter()
    out = splitter.feed(b"42 nonsense")
    assert len(out) == 1 and isinstance(out[0], Discarded)
    assert splitter.feed(b" more nonsense {}") == []
    assert splitter.feed(b" still\n" + DOCS[2]) == [DOCS[2]]


def test_mismatched_brackets_are_dropped_up_to_the_newline() -> None:
    splitter = DocumentSplitter()
    out = splitter.feed(b'{"a": [1, 2}, "reply_name": "r"}\n' + DOCS[0])
    assert isinstance(out[0], Discarded)
    assert out[0].reason == "mismatched brackets"
    assert b'"reply_name": "r"' in out[0].sample
    assert out[1:] == [DOCS[0]]


def test_oversized_document_is_dropped_and_memory_stays_bounded() -> None:
    splitter = DocumentSplitter(max_document=1000)
    head = b'{"reply_name":"r9","pad":"'
    out = splitter.feed(head + b"x" * 5000)
    assert [type(p) for p in out] == [Discarded]
    assert isinstance(out[0], Discarded)
    assert out[0].sample.startswith(head) and len(out[0].sample) == 1000
    assert len(splitter.buf) == 0
    for _ in range(100):
        assert splitter.feed(b"y" * 5000) == []
        assert len(splitter.buf) == 0
    assert splitter.feed(b'"}\n' + DOCS[0]) == [DOCS[0]]


def test_oversized_pretty_document_drops_line_by_line_then_recovers() -> None:
    splitter = DocumentSplitter(max_document=100)
    big = b'{\n"a": "' + b"z" * 200 + b'",\n"b": 1\n}\n'
    out = splitter.feed(big + DOCS[0])
    assert out[-1] == DOCS[0]
    assert all(isinstance(p, Discarded) for p in out[:-1])


def test_drop_partial_forgets_a_dead_writers_bytes() -> None:
    splitter = DocumentSplitter()
    splitter.feed(b'{"jsonrpc": "2.0", "reply_name": "r1", "method": ')
    assert splitter.drop_partial().startswith(b'{"jsonrpc"')
    assert not splitter.partial
    assert splitter.feed(DOCS[0]) == [DOCS[0]]
