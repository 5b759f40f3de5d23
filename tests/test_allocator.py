"""The `pixgen` command starts itself again with tcmalloc preloaded where it is installed (issue 32:
glibc's heap kept 0.5-0.7 GB more at a CPU run's peak)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pixgen.allocator import ENV, QUIET, library_dirs, preload_env

ROOT = Path(__file__).resolve().parents[1]
INSTALLED = next(
    (f"{d}/libtcmalloc_minimal.so.4" for d in library_dirs() if Path(d, "libtcmalloc_minimal.so.4").is_file()), None
)
needs_tcmalloc = pytest.mark.skipif(
    INSTALLED is None or not sys.platform.startswith("linux"),
    reason="tcmalloc is not installed (apt-get install libtcmalloc-minimal4)",
)


def test_the_environment_to_start_again_in():
    lib = f"{library_dirs()[0]}/libtcmalloc_minimal.so.4"
    there = {lib, "/opt/my/jemalloc.so"}.__contains__
    env = preload_env({"HOME": "/h"}, there)
    assert env == {"HOME": "/h", **QUIET, "LD_PRELOAD": lib}
    assert preload_env({"LD_PRELOAD": "/opt/other.so"}, there)["LD_PRELOAD"] == f"{lib} /opt/other.so"
    assert preload_env({ENV: "/opt/my/jemalloc.so"}, there)["LD_PRELOAD"] == "/opt/my/jemalloc.so"
    assert preload_env({"LD_PRELOAD": lib}, there) is None  # already preloaded: no second start
    assert preload_env({ENV: "system"}, there) is None
    assert preload_env({ENV: ""}, there) == {ENV: "", **QUIET, "LD_PRELOAD": lib}  # empty: as if unset
    assert preload_env({}, lambda path: False) is None  # not installed


@pytest.mark.parametrize("named", ["/missing.so", "nan", "crafted"])
def test_a_named_allocator_that_is_no_library_is_one_line_and_exit_2(tmp_path, named):
    if named == "crafted":
        named = tmp_path / "libfake.so"
        named.write_text("not a library")  # the loader would print its own error in every process
    env = _env(**{ENV: str(named)})
    done = subprocess.run([sys.executable, "-m", "pixgen", "presets"], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.splitlines() == [f"pixgen: error: {ENV}={named} is not a shared library: give the path "
                                        "to one, 'auto' or 'system'"]  # fmt: skip


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (ENV, "LD_PRELOAD")}
    return dict(env, PYTHONPATH=str(ROOT), PIXGEN_BF16_SPEEDUP="1.0", **extra)


@needs_tcmalloc
@pytest.mark.parametrize(("choice", "allocator"), [(None, "tcmalloc"), ("system", "system")])
def test_the_pixgen_command_runs_on_tcmalloc_where_installed(tmp_path, choice, allocator):
    env = _env(**({ENV: choice} if choice else {}))
    cmd = [sys.executable, "-m", "pixgen", "a cat", "--preset", "smoke", "-i", "2", "-o", str(tmp_path), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "tcmalloc" not in done.stderr, done.stderr
    record = json.loads((Path(json.loads(done.stdout)["run_dir"]) / "run.json").read_text())
    assert record["allocator"] == allocator


@needs_tcmalloc
def test_it_starts_again_once_with_the_same_arguments():
    script = (
        "import sys; from pixgen.allocator import restart_with_allocator, in_use; "
        "print('start', sys.argv[1:], flush=True); restart_with_allocator(); print(in_use(), sys.argv[1:])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "x", "y"], capture_output=True, text=True, env=_env(), timeout=120
    )
    assert done.stdout.splitlines() == ["start ['x', 'y']", "start ['x', 'y']", "tcmalloc ['x', 'y']"], done.stderr


def test_library_use_keeps_the_system_allocator():
    done = subprocess.run(
        [sys.executable, "-c", "import pixgen.api; from pixgen.allocator import in_use; print(in_use())"],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert done.stdout.strip() == "system", done.stderr
