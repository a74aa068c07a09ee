"""The compiled hot path and its pure-Python fallback (issue 16, msrpd/hotpath.py).

The test command runs the suite on the mypyc-compiled modules pyproject.toml lists under
[tool.msrpd] compiled, then the compiled modules' own suites with MSRPD_PURE=1 on their .py
sources (scripts/test). A run without
MSRPD_PURE must really have the compiled modules, or it would test the pure path twice.
"""

from __future__ import annotations

import ast
import glob
import importlib
import json
import os
import sys
import tomllib
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import psutil
import pytest

import msrpd
from msrpd.hotpath import build_of, group_library, pure_requested, stamp_matches, write_stamp

from .integration.relay import CMAP_ROUTE, running
from .integration.test_relaying import authed, exchange

ROOT = Path(msrpd.__file__).parent.parent
PURE = pure_requested()


def compiled_modules() -> list[str]:
    """The dotted names of the modules setup.py compiles."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        patterns = tomllib.load(f)["tool"]["msrpd"]["compiled"]
    paths = sorted({p for pattern in patterns for p in glob.glob(pattern, root_dir=ROOT)})
    names = [p.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for p in paths]
    assert "msrpd.protocol.reader" in names and "msrpd.workers.conn" in names
    return names


def built(name: str) -> Path | None:
    """The compiled extension of module `name` on disk, if it was built."""
    stem = ROOT.joinpath(*name.split("."))
    for suffix in EXTENSION_SUFFIXES:
        for path in (stem.with_name(stem.name + suffix), stem / f"__init__{suffix}"):
            if path.exists():
                return path
    return None


def test_this_run_tests_the_path_it_claims() -> None:
    """Without MSRPD_PURE every listed module runs compiled: a test command whose install
    built nothing (no gcc, MSRPD_BUILD_PURE=1) fails here instead of testing the pure path
    twice. With it, no msrpd module is an extension."""
    names = compiled_modules()
    modules = [importlib.import_module(name) for name in names]
    if PURE:
        assert msrpd.hot_path() == "pure"
        loaded = [m for n, m in sys.modules.items() if n == "msrpd" or n.startswith("msrpd.")]
        assert [m.__name__ for m in loaded if not str(m.__file__).endswith(".py")] == []
        return
    missing = [n for n in names if built(n) is None]
    assert missing == [], (
        "the hot path is not compiled: install with `pip install -e '.[test]'` (gcc and the"
        " Python headers needed), or set MSRPD_PURE=1 to test the pure path"
    )
    assert msrpd.hot_path() == "compiled"
    assert [m.__name__ for m in modules if m.__file__ != str(built(m.__name__))] == []
    # An extension left from a module taken off the list would run its old code.
    on_disk = {p for suffix in EXTENSION_SUFFIXES for p in (ROOT / "msrpd").rglob(f"*{suffix}")}
    assert on_disk == {built(n) for n in names}


def test_a_profile_guided_stamp_holds_for_the_library_it_was_written_for_only(
    tmp_path: Path,
) -> None:
    """scripts/build-pgo stamps the library it built; a plain build after it (pip install)
    writes a new file, and the stamp no longer matches: another size, or the same size later."""
    library = tmp_path / "msrpd__mypyc.cpython-311-x86_64-linux-gnu.so"
    library.write_bytes(b"built with profiles")
    assert not stamp_matches(library)  # never stamped
    assert build_of(library) == "compiled"
    stamp = write_stamp(library)
    assert stamp == tmp_path / (library.name + ".pgo")
    assert stamp_matches(library)
    assert build_of(library) == "compiled, profile-guided"
    library.write_bytes(b"a plain build")
    assert not stamp_matches(library)
    assert build_of(library) == "compiled"
    write_stamp(library)
    assert stamp_matches(library)
    later = library.stat().st_mtime_ns + 1_000_000_000
    os.utime(library, ns=(later, later))
    assert not stamp_matches(library)
    stamp.unlink()
    assert not stamp_matches(library)


def _source(name: str) -> Path | None:
    stem = ROOT.joinpath(*name.split("."))
    for path in (stem.with_suffix(".py"), stem / "__init__.py"):
        if path.exists():
            return path
    return None


def _imports(name: str, path: Path) -> dict[str, tuple[str, str]]:
    """Each name `from ... import`ed at the top of module `name`: (module, its name there)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            for alias in node.names:
                names[alias.asname or alias.name] = (module, alias.name)
    return names


def _origin(module: str, name: str) -> tuple[str, str]:
    """Where `name` as seen in `module` is defined, through re-exports (package __init__s)."""
    path = _source(module)
    while path is not None and name in (imports := _imports(module, path)):
        module, name = imports[name]
        path = _source(module)
    return module, name


def test_no_interpreted_class_subclasses_a_compiled_one() -> None:
    """mypyc refuses at run time (`interpreted classes cannot inherit from compiled`) what
    mypy accepts: a class in a module left off the list that extends a compiled module's
    class fails only on the compiled path, and only when the relay starts. Read from the
    sources, so the pure run checks it too."""
    compiled = set(compiled_modules())
    wrong = []
    for path in sorted((ROOT / "msrpd").rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if name in compiled:
            continue
        imports = _imports(name, path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    if isinstance(base, ast.Name) and base.id in imports:
                        module, cls = _origin(*imports[base.id])
                        if module in compiled:
                            wrong.append(f"{name}.{node.name}({module}.{cls})")
    assert wrong == [], "add these modules to [tool.msrpd] compiled in pyproject.toml"


def mapped(pid: int) -> set[Path]:
    """The files process `pid` has mapped: the extension modules it loaded among them."""
    return {Path(m.path) for m in psutil.Process(pid).memory_maps(grouped=True)}


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_a_live_relays_processes_run_the_path_the_environment_chose(pure: bool) -> None:
    """MSRPD_PURE reaches every process the CLI starts: the supervisor and the workers it
    forks run the .py sources under it, the compiled modules without it (what each process
    has mapped), frames go through, and core.version and `msrpd status` say which path."""
    names = compiled_modules()
    compiled = not pure and all(built(n) is not None for n in names)
    ours = {p for p in map(built, names) if p is not None} | set(ROOT.glob("msrpd__mypyc.*"))
    with running(children=2, pure=pure) as relay:
        path = "compiled" if compiled else "pure"
        version = json.loads(relay.cli("ctl", "--json", "core.version").stdout)
        assert version["hot_path"] == path
        # "compiled, profile-guided" after scripts/build-pgo; asked of the library on disk,
        # not of this process (MSRPD_PURE=1 runs it on the .py sources).
        build = build_of(group_library()) if compiled else "pure"
        assert version["hot_build"] == build
        assert f"hot path {build}\n" in relay.cli("status").stdout
        # The bundled route as shipped runs compiled with the rest (routing/script.py).
        route = "compiled" if compiled else "interpreted"
        assert f"starting: hot path {build}, route {CMAP_ROUTE.resolve()} ({route})" in relay.log()
        with authed(relay.port, "alice") as alice, authed(relay.port, "bob") as bob:
            exchange(alice, bob, b"through a worker")
            exchange(bob, alice, b"and back")
        workers = relay.worker_pids()
        assert len(workers) == 2
        for pid in [relay.supervisor().pid, *workers]:
            loaded = mapped(pid) & ours
            if compiled:  # every compiled function lives in the group's library (setup.py)
                assert any(p.name.startswith("msrpd__mypyc.") for p in loaded), pid
            else:
                assert loaded == set(), pid
