"""Compiles msrpd's per-frame hot path with mypyc when msrpd is installed (issue 16).

pyproject.toml holds the metadata and, under [tool.msrpd] compiled, the modules to compile:
their .so files land beside the .py sources (in place for an editable install) and Python's
import system prefers them. MSRPD_PURE=1 at run time loads the .py sources instead
(msrpd/hotpath.py); MSRPD_BUILD_PURE=1 at build time skips compiling. A failed compile fails
the install: there is no silent fallback to a pure one.
"""

import glob
import os
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mypyc.build import mypycify
from setuptools import setup
from setuptools.command.build_ext import build_ext


def hot_modules() -> list[str]:
    with open("pyproject.toml", "rb") as f:
        patterns = tomllib.load(f)["tool"]["msrpd"]["compiled"]
    return sorted({path for pattern in patterns for path in glob.glob(pattern)})


def _set(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def ext_modules() -> list[object]:
    if _set("MSRPD_BUILD_PURE"):
        return []
    # pip runs this file three times: for the build requirements (egg_info), the metadata
    # (dist_info) and the build. Only the build needs the C: mypycify type-checks the whole
    # package before it writes any (13 s each time).
    if sys.argv[1:2] in (["egg_info"], ["dist_info"]):
        return []
    # One shared library (msrpd__mypyc) for the whole group: calls between the modules are
    # direct C calls. A C file per module builds in 64 s of CPU against 87 s for one file,
    # and counts the same instructions per relayed frame (206k, callgrind, relay route).
    extensions = mypycify(hot_modules(), group_name="msrpd", multi_file=True)
    # The group's functions call each other across its C files: with default visibility each
    # such call goes through the PLT (an indirect jump, and one more for the CPU to predict).
    # Hidden, they bind inside the library and the calls are direct; Python finds the modules
    # by their PyInit_ functions, which stay exported, and the shims reach the group through
    # a capsule, not by symbol. Link-time optimisation inlines across the C files (a module's
    # small methods into another's callers); -fno-plt calls libpython through the GOT without
    # a stub's jump. Callgrind, a steady frame (2026-12-04): 32,043 -> 31,475 instructions
    # hidden, 30,705 with both; mispredicted indirect branches (its branch simulation) 549 ->
    # 368 -> 318. MSRPD_BUILD_NO_LTO=1 leaves LTO out, for a compiler or linker without it
    # (GCC before 10, or clang without its gold plugin, fail the link).
    lto = not _set("MSRPD_BUILD_NO_LTO")
    compile_args = ["-fvisibility=hidden", "-fno-plt"] + (["-flto=auto"] if lto else [])
    # -O3 (mypyc's level) at the link too: the link compiles the LTO objects, and LDSHARED
    # may carry an -O2 of its own.
    link_args = ["-fno-plt"] + (["-flto=auto", "-O3"] if lto else [])
    for ext in extensions:
        # Fresh lists: mypycify gives every extension the same compile-args list object.
        ext.extra_compile_args = [*ext.extra_compile_args, *compile_args]
        ext.extra_link_args = [*ext.extra_link_args, *link_args]
    return list(extensions)


class BuildOnEveryCore(build_ext):
    """mypyc's group is one extension of about 60 C files, which setuptools compiles one after
    another (its `parallel` option spreads extensions, not files): compile them side by side,
    one gcc per core. The link waits for all of them."""

    def build_extension(self, ext: Any) -> None:
        serial = self.compiler.compile

        def compile_each(sources: list[str], *args: Any, **kwargs: Any) -> list[str]:
            with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
                done = pool.map(lambda source: serial([source], *args, **kwargs), sources)
                return [obj for objects in done for obj in objects]

        self.compiler.compile = compile_each
        try:
            super().build_extension(ext)
        finally:
            del self.compiler.compile


setup(ext_modules=ext_modules(), cmdclass={"build_ext": BuildOnEveryCore})
