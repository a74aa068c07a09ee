"""Fixtures every test directory shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .forking import Children


@pytest.fixture
def children() -> Iterator[Children]:
    kids = Children()
    try:
        yield kids
    finally:
        for pid in list(kids.live):
            kids.kill(pid)
