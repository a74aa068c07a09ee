"""Loading a routing script (routing/script.py): the bundled routes as shipped run their
compiled modules on the compiled path (issue 16), anything else is exec'd from its text.

The route tests (test_routes.py, test_relay_route.py, ...) run on both loaders through the
both_loaders fixture; here: which loader a file gets, and that the rules of loading hold.
"""

from __future__ import annotations

import hashlib
import importlib
import re
import shutil
import types
from pathlib import Path

import pytest

from msrpd.hotpath import pure_requested
from msrpd.routing import DEFAULT_ROUTE, RouteLoadError, describe_route, load_route
from msrpd.routing.script import BUNDLED_ROUTES

from .fakeenv import ROUTES, Client, FakeEnv, Relay

COMPILED = not pure_requested()
ETC = ROUTES.parents[2] / "etc" / "routes"
ALICE = Client("alice", 40001, conid=0x1001)


def test_the_digests_are_the_shipped_routes_and_etc_has_the_same_text() -> None:
    """BUNDLED_ROUTES names the text each compiled module was built from: a route changed
    without its digest would run interpreted for ever (or, edited in place, the old code)."""
    for name, digest in BUNDLED_ROUTES.items():
        text = (ROUTES / f"{name}.py").read_bytes()
        assert hashlib.sha256(text).hexdigest() == digest, f"{name}.py changed: update script.py"
        assert (ETC / f"{name}.py").read_bytes() == text
    assert sorted(p.stem for p in ROUTES.glob("[!_]*.py")) == sorted(BUNDLED_ROUTES)


@pytest.mark.parametrize("name", sorted(BUNDLED_ROUTES))
def test_a_bundled_route_runs_compiled_unless_pure(name: str, tmp_path: Path) -> None:
    """Its text decides, wherever the file is: the shipped file, the etc/ copy, a copy an
    operator made unchanged. MSRPD_PURE=1 execs it."""
    module = importlib.import_module(f"msrpd.routing.routes.{name}")
    shutil.copy(ROUTES / f"{name}.py", tmp_path / "mine.py")
    for path in (ROUTES / f"{name}.py", ETC / f"{name}.py", tmp_path / "mine.py"):
        script = load_route(path, "ksr_msrp_event")
        assert script.compiled is COMPILED
        assert script.path == path.resolve()
        if COMPILED:
            assert script.event is module.ksr_msrp_event
            assert not isinstance(script.event, types.FunctionType)  # mypyc's, not bytecode
            assert script.describe() == f"{path.resolve()} (compiled)"
        else:
            assert isinstance(script.event, types.FunctionType)
            assert script.event.__code__.co_filename == str(path.resolve())
            assert script.describe() == f"{path.resolve()} (interpreted)"
        assert describe_route(path) == script.describe()
    default = load_route(None, "ksr_msrp_event")
    assert (default.path, default.compiled) == (DEFAULT_ROUTE.resolve(), COMPILED)


def test_an_edited_copy_runs_interpreted_with_its_edit(env: FakeEnv, tmp_path: Path) -> None:
    """One byte changed (the example's password) and the copy is exec'd: the edit is what
    runs, not the compiled original."""
    text = (ROUTES / "cmap.py").read_text()
    edited = tmp_path / "cmap.py"
    edited.write_text(text.replace('PASSWORD: Final = "xyz123"', 'PASSWORD: Final = "xyz124"'))
    assert len(edited.read_bytes()) == len(text.encode())
    script = load_route(edited, "ksr_msrp_event")
    assert not script.compiled
    assert script.describe() == f"{edited} (interpreted)"
    assert describe_route(edited) == script.describe()
    assert isinstance(script.event, types.FunctionType)
    assert script.event.__code__.co_filename == str(edited)
    env.has_user_store = False  # the route's PASSWORD decides
    relay = Relay("cmap", env)
    relay.script = script
    assert relay.auth(ALICE, password="xyz124").code == 200
    original = Relay("cmap", env)
    assert original.auth(ALICE, password="xyz124").code == 401


def test_loading_an_edited_copy_gives_a_fresh_module_each_time(tmp_path: Path) -> None:
    """exec's rule (a reload gets new code) holds for a copy: two loads, two modules."""
    path = tmp_path / "relay.py"
    path.write_text((ROUTES / "relay.py").read_text() + "\n# mine\n")
    first, second = (load_route(path, "ksr_msrp_event") for _ in range(2))
    assert isinstance(first.event, types.FunctionType)
    assert isinstance(second.event, types.FunctionType)
    assert not first.compiled and first.event is not second.event
    assert first.event.__globals__ is not second.event.__globals__


@pytest.mark.parametrize("name", sorted(BUNDLED_ROUTES))
def test_the_compiled_routes_keep_no_state_between_loads(name: str) -> None:
    """A compiled route is imported once and shared by every load (and reload), where exec
    gave each load a fresh module: that is the same only while its globals are constants."""
    module = importlib.import_module(f"msrpd.routing.routes.{name}")
    constants = (str, int, bytes, tuple, frozenset, re.Pattern, types.ModuleType, type)
    state = {
        key: value
        for key, value in vars(module).items()
        if not key.startswith("__")
        and not callable(value)
        and not isinstance(value, constants)
        and value is not None
    }
    assert state == {}
    for key, value in vars(module).items():
        if isinstance(value, tuple):
            assert all(isinstance(item, (str, int)) for item in value), key


def test_load_errors_still_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "cmap.py"
    text = (ROUTES / "cmap.py").read_text()
    path.write_text(text.replace("    msrp.reply_flags(1)\n", "    msrp.reply_flags(1\n", 1))
    line = text[: text.index("    msrp.reply_flags(1)\n")].count("\n") + 1
    with pytest.raises(RouteLoadError, match=rf"^{re.escape(str(path))}:{line}: "):
        load_route(path, "ksr_msrp_event")
    with pytest.raises(RouteLoadError, match=r"no callable other\(\)"):
        load_route(ROUTES / "cmap.py", "other")  # the compiled module has none either
    with pytest.raises(RouteLoadError, match="cannot read"):
        load_route(tmp_path / "missing.py", "ksr_msrp_event")
    assert describe_route(tmp_path / "missing.py") == f"{tmp_path / 'missing.py'} (unreadable)"
