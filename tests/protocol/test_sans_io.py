"""msrpd/protocol stays sans-IO (style rule 1): no I/O, clock or process modules."""

from __future__ import annotations

import ast
from pathlib import Path

import msrpd.protocol

BANNED = {
    "asyncio",
    "uvloop",
    "socket",
    "os",
    "time",
    "multiprocessing",
    "selectors",
    "threading",
    "subprocess",
    "random",
    "secrets",
    "msrpd.shm",
    "msrpd.workers",
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_protocol_package_imports_no_io_modules() -> None:
    files = sorted(Path(msrpd.protocol.__file__).parent.glob("*.py"))
    assert len(files) >= 10
    for path in files:
        for name in imported_modules(path):
            hit = [b for b in BANNED if name == b or name.startswith(b + ".")]
            assert not hit, f"{path.name} imports {name}"


def test_the_check_catches_a_banned_import(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import os.path\nfrom time import monotonic\n")
    assert imported_modules(sample) == {"os.path", "time"}
