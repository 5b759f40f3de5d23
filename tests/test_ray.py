"""`pixgen batch --ray` and `pixgen.ray.Generate` on a real Ray (a two-node cluster on this machine,
or a local Ray): byte-identical to a local batch, a worker killed mid-job, a driver interrupted and
resumed, a bad line. The tests that start Ray are skipped where it is not installed; each one stops
every Ray process it started, whatever becomes of it."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SMOKE

NO_RAY = importlib.util.find_spec("ray") is None


def needs_ray(test):
    """A test that starts a real Ray (marked `ray`), skipped with the reason where Ray is missing."""
    return pytest.mark.ray(pytest.mark.skipif(NO_RAY, reason="Ray is not installed (pip install 'pixgen[ray]')")(test))


STORE = 100 * 2**20  # each node's object store (Ray's default is 30% of the memory)
JOB = ("--set", "iterations=4", "--save-every", "2", "--set", "threads=1")  # one thread: pixels compare
LONG = ("--set", "iterations=24", "--save-every", "2", "--set", "threads=1")


@pytest.fixture
def ray_env(monkeypatch):
    """Ray's processes at the tests' priority (Ray lowers its workers' by 15 by default: on a busy
    machine they would crawl), and no RAY_ADDRESS from outside."""
    monkeypatch.setenv("RAY_worker_niceness", "0")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


@pytest.fixture
def two_nodes(ray_env):
    """A Ray cluster of two nodes on this machine (a head and a worker node, one CPU each)."""
    from ray.cluster_utils import Cluster

    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=1, object_store_memory=STORE, include_dashboard=False)
        cluster.add_node(num_cpus=1, object_store_memory=STORE)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def local_ray(ray_env):
    """A local Ray of two CPUs, connected: a batch in this process uses it (and leaves it up)."""
    import ray

    try:
        ray.init(num_cpus=2, object_store_memory=STORE, include_dashboard=False, logging_level="WARNING")
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def one_thread_after():
    """A local batch of one thread sets torch's thread count for the whole process: put it back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _summary(out: str) -> dict[str, dict]:
    """The summary table (tab-separated on a pipe) by job folder."""
    lines = [line.split("\t") for line in out.rstrip("\n").splitlines()]
    return {row[0]: dict(zip(lines[0], row, strict=True)) for row in lines[1:]}


def _steps_done(job_dir: Path) -> int:
    try:
        return json.loads((job_dir / "run.json").read_text()).get("steps_done", 0)
    except (OSError, ValueError):
        return 0


@needs_ray
def test_two_node_cluster_batch_is_byte_identical_to_a_local_batch(tmp_path, two_nodes, cli, one_thread_after):
    f = _write(tmp_path, "p.txt", "a red house\na blue lake\na green tree\nan owl\na fox\na yellow boat\n")
    code, _, err = cli("batch", f, "-o", tmp_path / "local", *SMOKE, *JOB)
    assert code == 0, err
    on_ray = ("--ray", two_nodes.address, "--ray-cpus", "1")
    code, out, err = cli("batch", f, "-o", tmp_path / "ray", *SMOKE, *JOB, *on_ray)
    assert code == 0, err
    jobs = sorted(p.name for p in (tmp_path / "local").iterdir() if p.is_dir())
    assert len(jobs) == 6 and sorted(p.name for p in (tmp_path / "ray").iterdir() if p.is_dir()) == jobs
    for name in jobs:
        for image in ("final.png", "frames/000002.png"):
            assert (tmp_path / "ray" / name / image).read_bytes() == (tmp_path / "local" / name / image).read_bytes()
        assert isinstance(json.loads((tmp_path / "ray" / name / "run.json").read_text())["clip_score"], float)
    table = _summary(out)
    assert sorted(table) == jobs and {row["worker"] for row in table.values()} == {"worker 1", "worker 2"}
    assert (tmp_path / "ray" / "index.html").read_text().count("<figure>") == 6
    assert (tmp_path / "ray" / "contact_sheet.png").is_file()


def _make_settings(flags: dict):
    from pixgen.settings import load_settings

    return lambda job: load_settings("smoke", None, dict(flags, **job))


@needs_ray
def test_a_worker_killed_mid_job_is_retried_from_its_last_checkpoint(tmp_path, local_ray, one_thread_after):
    """kill -9 of the worker's process: Ray restarts it and runs the job again, which goes on from
    the checkpoint the driver holds; the image is the uninterrupted one's."""
    from pixgen.apps.batch import run_batch
    from pixgen.apps.ray_batch import RayOptions, Watch, run_ray_batch

    f = _write(tmp_path, "p.txt", "a red house\na blue lake\n")
    make_settings = _make_settings({"iterations": 20, "save_every": 2, "threads": 1})
    out, workers, killed = tmp_path / "ray", [], {}
    target = out / "0001-a-red-house"

    def on_step(worker, name, step, total):
        saved = _steps_done(target)  # the driver's copy of the job's last checkpoint
        if killed or name != target.name or saved < 6 or not (target / "state.safetensors").is_file():
            return
        handle = workers[int(worker.split()[-1]) - 1]
        pid = local_ray.get(handle.pid.remote())
        record = json.loads((target / "run.json").read_text())
        killed.update(pid=pid, saved=saved, times=record["seconds_per_step"][:saved])
        os.kill(pid, signal.SIGKILL)

    watch = Watch(on_step=on_step, on_workers=workers.extend)
    results = run_ray_batch(f, out, make_settings, options=RayOptions(cpus=1), watch=watch)
    assert killed, "the job ended before a checkpoint reached the driver"
    assert [r.status for r in results] == ["done"] * 2
    assert results[0].resumed_from >= killed["saved"] > 0  # went on from the checkpoint, not from step 0
    record = json.loads((target / "run.json").read_text())
    assert record["seconds_per_step"][: killed["saved"]] == killed["times"]  # the steps before were not run again
    run_batch(f, tmp_path / "local", make_settings)
    for r in results:
        assert r.image.read_bytes() == (tmp_path / "local" / r.job.name / "final.png").read_bytes()
    assert record["steps_done"] == 20 and len(record["losses"]) == 20


@needs_ray
def test_driver_interrupt_keeps_what_is_done_and_resume_goes_on(tmp_path, local_ray, cli):
    f = _write(tmp_path, "p.txt", "a red house\na blue lake\n")
    out = tmp_path / "out"
    args = ["batch", str(f), "-o", str(out), *SMOKE, *LONG, "--ray", "--ray-cpus", "1"]
    env = dict(os.environ, RAY_ADDRESS=local_ray.get_runtime_context().gcs_address)
    proc = subprocess.Popen([sys.executable, "-m", "pixgen", *args], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and max(map(_steps_done, out.glob("*")), default=0) < 6:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        code, err = proc.wait(timeout=150), proc.stderr.read()
    finally:
        proc.kill()
    assert code == 130 and "pixgen: interrupted" in err and "--resume" in err, err
    stopped = [job for job in out.glob("0*") if not (job / "final.png").is_file() or _steps_done(job) < 24]
    assert stopped and all((job / "state.safetensors").is_file() for job in stopped)
    times = {job.name: json.loads((job / "run.json").read_text())["seconds_per_step"] for job in stopped}
    code, table, err = cli(*args, "--resume")
    assert code == 0, err
    rows = _summary(table)
    for name, before in times.items():
        assert rows[name]["status"] == "done" and rows[name]["note"] == f"resumed from step {len(before)}"
        after = json.loads((out / name / "run.json").read_text())
        assert after["steps_done"] == 24 and after["seconds_per_step"][: len(before)] == before  # went on
    assert len(list(out.glob("*/final.png"))) == 2


@needs_ray
def test_a_bad_line_fails_alone_as_in_a_local_batch(tmp_path, local_ray, cli):
    text = "- a red house\n- prompt: a dog\n  colour: red\n- prompt: a fox\n  init_image: missing.png\n- an owl\n"
    f = _write(tmp_path, "p.yaml", text)
    code, _, local_err = cli("batch", f, "-o", tmp_path / "local", *SMOKE, "--set", "iterations=2")
    assert code == 1
    code, table, err = cli("batch", f, "-o", tmp_path / "ray", *SMOKE, "--set", "iterations=2", "--ray")
    assert code == 1 and "Traceback" not in err
    rows = _summary(table)
    assert [rows[n]["status"] for n in sorted(rows)] == ["done", "failed", "failed", "done"]
    assert "line 2" in rows["0002-a-dog"]["note"] and "'colour'" in rows["0002-a-dog"]["note"]
    assert "line 4" in rows["0003-a-fox"]["note"] and "image not found: missing.png" in rows["0003-a-fox"]["note"]
    assert "image not found: missing.png" in local_err
    folders = {p: sorted(q.name for q in (tmp_path / p).iterdir() if q.is_dir()) for p in ("local", "ray")}
    assert folders["ray"] == folders["local"]  # the failed init image's job leaves its (empty) folder in both
    assert (tmp_path / "ray" / "index.html").read_text().count("<figure>") == 2


@needs_ray
def test_a_grid_runs_its_cells_on_ray_as_it_runs_them_here(tmp_path, local_ray, cli, one_thread_after):
    args = ("grid", "a red house", "--x", "seed=1..2", *SMOKE, *JOB)
    for where, extra in (("local", ()), ("ray", ("--ray",))):
        code, _, err = cli(*args, "-o", tmp_path / where, *extra)
        assert code == 0 and "Traceback" not in err, err
        assert (tmp_path / where / "grid.png").is_file()
    local = sorted((tmp_path / "local" / "cells").glob("*/final.png"))
    assert len(local) == 2
    for image in local:
        assert image.read_bytes() == (tmp_path / "ray" / image.relative_to(tmp_path / "local")).read_bytes()


def test_ray_is_not_imported_by_help_or_other_commands(tmp_path):
    code = (
        "import sys; from pixgen.cli.app import main; main(['--help']); main(['batch', '--help']);"
        f"main(['batch', {str(tmp_path / 'none.txt')!r}]); main(['presets']);"
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--ray" in proc.stdout and "batch file not found" in proc.stderr


def test_without_ray_the_option_says_how_to_install_it(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails, as where it is not installed
    f = _write(tmp_path, "p.txt", "a cat\n")
    code, _, err = cli("batch", f, "-o", tmp_path / "o", *SMOKE, "--ray")
    assert code == 2 and err.strip().splitlines() == [
        "pixgen: error: --ray needs Ray, which is not installed here: pip install 'pixgen[ray]'"
    ]
    assert not (tmp_path / "o").exists()


def test_ray_and_shard_together_is_a_one_line_error(cli, tmp_path):
    f = _write(tmp_path, "p.txt", "a cat\n")
    for extra in (["--ray", "--shard", "0/2"], ["--ray=127.0.0.1:6379", "--shard", "0/2"]):
        code, _, err = cli("batch", f, *extra)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "--ray and --shard" in err, err
    code, _, err = cli("batch", f, "--ray-workers", "2")
    assert code == 2 and "--ray-workers needs --ray" in err
    code, _, err = cli("grid", "a cat", "--x", "seed=1..2", "--ray", "--shard", "0/2", "-o", tmp_path / "g")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--ray and --shard" in err, err


def test_ray_takes_an_address_or_none():
    from pixgen.cli.scale import optional_address

    assert optional_address(["batch", "p.txt", "--ray"]) == ["batch", "p.txt", "--ray="]
    assert optional_address(["batch", "--ray", "p.txt"]) == ["batch", "--ray=", "p.txt"]
    assert optional_address(["batch", "--ray", "--resume", "p.txt"]) == ["batch", "--ray=", "--resume", "p.txt"]
    for address in ("10.0.0.1:6379", "ray://head:10001", "auto"):
        assert optional_address(["batch", "p.txt", "--ray", address]) == ["batch", "p.txt", "--ray", address]


def test_the_pool_is_one_worker_per_gpu_or_per_cpus_cores():
    from pixgen.apps.ray_batch import plan_pool
    from pixgen.errors import PixgenError

    gpus = [{"Resources": {"CPU": 32, "GPU": 4}}, {"Resources": {"CPU": 16, "GPU": 2}, "Alive": True}]
    plan = plan_pool(gpus, "auto", None, None, 100)
    assert plan.count == 6 and plan.resources["num_gpus"] == 1 and plan.threads is None
    assert plan_pool(gpus, "auto", None, 3, 100).count == 3 and plan_pool(gpus, "auto", None, None, 2).count == 2
    cpu = plan_pool(gpus, "cpu", 8, None, 100)  # the jobs ask for the CPU: the GPUs stay idle
    assert (cpu.count, cpu.resources, cpu.threads) == (6, {"num_cpus": 8}, 8)
    nodes = [{"Resources": {"CPU": 2}}, {"Resources": {"CPU": 1}}, {"Resources": {"CPU": 64}, "Alive": False}]
    assert plan_pool(nodes, "auto", None, None, 10).count == 1  # 2 cores each (the default, at most a node's)
    assert plan_pool(nodes, "auto", 1, None, 10).count == 3
    with pytest.raises(PixgenError, match="--ray-cpus 4"):
        plan_pool(nodes, "auto", 4, None, 10)


def test_job_folders_travel_as_files_and_are_written_back_safely(tmp_path):
    from pixgen.errors import PixgenError
    from pixgen.scale.tree import Snapshot, write_tree

    src = tmp_path / "src"
    write_tree(src, {"run.json": b"{}", "frames/000002.png": b"png", "progress.mp4": b"half"})
    snap = Snapshot(src)
    assert snap.changes() == {"frames/000002.png": b"png", "run.json": b"{}"}  # no video while it is encoded
    assert snap.changes() == {}
    (src / "run.json").write_bytes(b'{"steps_done": 2}')
    assert snap.changes() == {"run.json": b'{"steps_done": 2}'}
    dest = tmp_path / "dest"
    write_tree(dest, {"frames/000002.png": b"png", "stale.png": b"old"})
    kept = (dest / "frames" / "000002.png").stat().st_mtime_ns
    time.sleep(0.01)
    write_tree(dest, {"frames/000002.png": b"png", "final.png": b"new"}, exact=True)
    assert (dest / "frames" / "000002.png").stat().st_mtime_ns == kept  # the same bytes are not rewritten
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == ["000002.png", "final.png"]
    for bad in ("../escape.png", "/etc/x", "a/../../b", "a//b", ""):
        with pytest.raises(PixgenError, match="not a plain path"):
            write_tree(dest, {bad: b"x"})
    assert not (tmp_path / "escape.png").exists()


def test_ray_data_callable_makes_the_images_of_a_local_run(tmp_path):
    """pixgen.ray.Generate on a batch as Ray Data hands it over (columns of numpy arrays): the
    PNG of `pixgen generate` with the same settings, byte for byte; a bad row fails alone."""
    from pixgen.api import generate
    from pixgen.ray import Generate
    from pixgen.settings import load_settings

    rows = {
        "prompt": np.array(["a cat", "a dog", "an owl"]),
        "seed": np.array([3.0, 4.0, float("nan")]),
        "settings": np.array([{"iterations": 2}, '{"colour": 1}', None], dtype=object),
    }
    out = Generate(preset="smoke", overrides={"iterations": 3})(rows)
    assert list(out["error"][[0, 2]]) == ["", ""] and "'colour'" in out["error"][1] and out["png"][1] == b""
    assert out["seed"][0] == 3 and isinstance(out["seed"][2], int)
    settings = load_settings("smoke", None, {"prompt": "a cat", "seed": 3, "iterations": 2})
    local = generate(settings, run_dir=tmp_path / "a")
    assert out["png"][0] == local.image.read_bytes()
    assert json.loads(out["settings"][0])["iterations"] == 2 and json.loads(out["settings"][2])["iterations"] == 3
