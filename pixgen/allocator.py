"""The C allocator of a `pixgen` process. glibc's malloc keeps what a step frees and fragments it:
a CPU run's resident memory grows by a few hundred MB over its first steps. gperftools' tcmalloc
(the OS package libtcmalloc-minimal4 on Debian and Ubuntu, gperftools-libs on Fedora) reuses it
and takes no longer per step: the default bf16 run at 256x256 peaked at 1.5 GB under it against
2.2 GB (BENCHMARKS.md, "Memory (issue 32)"). So the `pixgen` command, when tcmalloc is installed,
starts itself again once with tcmalloc preloaded, before anything heavy is imported (the way
PyTorch's CPU launchers preload an allocator). `PIXGEN_ALLOCATOR=system` keeps glibc's;
`PIXGEN_ALLOCATOR=/path/lib.so` names another (anything but a shared library is refused in one
line: the loader would print its own error in every process). Library use (`import pixgen`) is
left alone."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping

from pixgen.errors import PixgenError

ENV = "PIXGEN_ALLOCATOR"
TCMALLOC = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
# tcmalloc reports every allocation over 1 GB on stderr unless told otherwise
QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 62)}


def library_dirs() -> list[str]:
    """Where the dynamic loader finds this machine's system libraries."""
    arch = getattr(sys.implementation, "_multiarch", "")
    dirs = [f"/usr/lib/{arch}", f"/lib/{arch}"] if arch else []
    return [*dirs, "/usr/lib64", "/lib64", "/usr/lib", "/lib"]


def is_library(path: str) -> bool:
    """Whether `path` is a file that starts as a shared library does (ELF)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def preload_env(environ: Mapping[str, str], usable: Callable[[str], bool] = is_library) -> dict | None:
    """The environment to start pixgen again in, with an allocator preloaded, or None to go on as
    it is: the allocator is turned off (`system`), already preloaded, or not installed. A library
    named in PIXGEN_ALLOCATOR that is not `usable` is refused (PixgenError)."""
    choice = environ.get(ENV) or "auto"
    if choice == "system" or not sys.platform.startswith("linux"):
        return None
    if choice != "auto" and not usable(choice):
        raise PixgenError(f"{ENV}={choice} is not a shared library: give the path to one, 'auto' or 'system'")
    found = [choice] if choice != "auto" else [f"{d}/{n}" for n in TCMALLOC for d in library_dirs()]
    library = next((path for path in found if usable(path)), None)
    preloaded = environ.get("LD_PRELOAD", "")
    if library is None or os.path.basename(library) in preloaded:
        return None
    return {**environ, **QUIET, "LD_PRELOAD": f"{library} {preloaded}".strip()}


def restart_with_allocator() -> None:
    """Replace this process by itself, started again as it was, with the allocator preloaded (the
    same PID, arguments and interpreter flags); nothing happens when there is nothing to preload."""
    env = preload_env(os.environ)
    if env is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, sys.orig_argv, env)


def in_use() -> str:
    """The allocator this process runs on: "tcmalloc", "jemalloc", "mimalloc" or "system"
    (glibc's, or this platform's own), read from the libraries it has mapped."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        return "system"
    return next((name for name in ("tcmalloc", "jemalloc", "mimalloc") if f"lib{name}" in maps), "system")
