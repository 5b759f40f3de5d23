"""Batch files, shards, resume after a kill, best-of-N, the gallery, and reproduce."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixgen.apps.batch import job_finished, parse_shard, read_jobs
from pixgen.errors import PixgenError
from tests.conftest import SMOKE

FAST = (*SMOKE, "--set", "iterations=2", "--set", "save_every=0")


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_text_yaml_and_jsonl_files(tmp_path):
    txt = read_jobs(_write(tmp_path, "a.txt", "# c\na cat\n\n  a dog  \n"))
    assert [(j.prompt, j.line) for j in txt] == [("a cat", 2), ("a dog", 4)]
    yml = read_jobs(_write(tmp_path, "b.yaml", "- a cat\n- prompt: a dog\n  seed: 3\n  cut-pow: 2\n"))
    assert yml[1].overrides == {"prompt": "a dog", "seed": 3, "cut_pow": 2} and yml[1].line == 2
    jl = read_jobs(_write(tmp_path, "c.jsonl", '{"prompt": "a cat", "iterations": 3}\n{bad\n'))
    assert jl[0].overrides["iterations"] == 3 and "__error__" in jl[1].overrides and jl[1].line == 2


@pytest.mark.parametrize("content", [b"", b"# only a comment\n\n", b"\x00\x01\x02binary", b"\xff\xfe\xfa"])
def test_empty_or_binary_batch_file_is_refused(tmp_path, content):
    p = tmp_path / "p.txt"
    p.write_bytes(content)
    with pytest.raises(PixgenError):
        read_jobs(p)


def test_shard_parsing():
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) == (0, 1)
    for bad in ("4/4", "-1/2", "a/b", "1", "0/0"):
        with pytest.raises(PixgenError):
            parse_shard(bad)


def test_batch_runs_reports_bad_lines_and_exits_1(cli, tmp_path):
    f = _write(tmp_path, "p.yaml", "- a cat\n- prompt: a dog\n  colour: red\n- prompt: a <script>alert(1)</script>\n")
    code, _, err = cli("batch", f, "-o", tmp_path / "out", *FAST)
    assert code == 1
    assert "line 2" in err and "'colour'" in err
    out = tmp_path / "out"
    assert (out / "0001-a-cat" / "final.png").is_file() and not (out / "0002-a-dog").exists()
    page = (out / "index.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "data:image/png;base64," in page and (out / "contact_sheet.png").is_file()
    # every thumbnail links to its full-size image and to its run folder
    assert '<a href="0001-a-cat/final.png" title="full size"><img' in page and '<a href="0001-a-cat/">' in page
    record = json.loads((out / "0001-a-cat" / "run.json").read_text())
    assert isinstance(record["clip_score"], float)


def test_existing_output_needs_resume(cli, tmp_path):
    f = _write(tmp_path, "p.txt", "a cat\n")
    assert cli("batch", f, "-o", tmp_path / "o", *FAST)[0] == 0
    code, _, err = cli("batch", f, "-o", tmp_path / "o", *FAST)
    assert code == 2 and "--resume" in err


def test_shards_split_the_file(cli, tmp_path):
    f = _write(tmp_path, "p.txt", "a\nb\nc\nd\ne\n")
    assert cli("batch", f, "-o", tmp_path / "o", "--shard", "1/2", *FAST)[0] == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir() if p.is_dir()) == ["0002-b", "0004-d"]
    code, _, err = cli("batch", f, "-o", tmp_path / "o2", "--shard", "7/9", *FAST)
    assert code == 2 and "shard" in err


def _finished(out):
    """The run.json files of the finished jobs (a job writes one at its start too)."""
    return [p for p in out.glob("*/run.json") if job_finished(p.parent)]


def test_kill_halfway_then_resume_completes(tmp_path):
    f = _write(tmp_path, "p.txt", "\n".join(f"prompt number {i}" for i in range(8)) + "\n")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pixgen", "batch", str(f), "-o", str(out), *SMOKE, "--set", "iterations=6"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(_finished(out)) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in _finished(out)}
    assert 3 <= len(done_before) < 8
    subprocess.run([*cmd, "--resume"], check=True, capture_output=True, timeout=300)
    finished = sorted(p.parent.name for p in out.glob("*/final.png"))
    assert len(finished) == 8 and (out / "index.html").is_file()
    for name, mtime in done_before.items():  # finished jobs were skipped, not redone
        assert (out / name / "run.json").stat().st_mtime_ns == mtime


def _smoke_models():
    """The smoke preset's models (tiny random VQGAN and CLIP, seeded): the scorer a run used."""
    from pixgen.api import prepare
    from pixgen.settings import load_settings

    return prepare(load_settings(preset="smoke", overrides={"prompt": "a cat"})).models


def _check_ranking(ranking, prompt):
    """Each score is the CLIP similarity of the saved image to the prompt, best first."""
    from pixgen.apps.clip_tools import clip_score

    (scorer,) = _smoke_models().scorers
    for c in ranking:
        assert c["clip_score"] == pytest.approx(clip_score(scorer, c["image"], prompt), abs=1e-5)
    scores = [c["clip_score"] for c in ranking]
    assert scores == sorted(scores, reverse=True) and [c["rank"] for c in ranking] == list(range(1, len(scores) + 1))


def test_candidates_are_ranked_and_best_is_linked(cli, tmp_path):
    code, out, err = cli("a cat", *FAST, "--seeds", "5,6,7", "-o", tmp_path, "--json")
    assert code == 0, err
    res = json.loads(out)
    ranking = res["ranking"]
    assert sorted(c["seed"] for c in ranking) == [5, 6, 7]
    _check_ranking(ranking, "a cat")
    best = Path(res["run_dir"]) / "best.png"
    assert best.is_file() and Path(res["image"]) == best and res["seed"] == ranking[0]["seed"]
    assert np.array_equal(np.asarray(Image.open(best)), np.asarray(Image.open(ranking[0]["image"])))


def test_candidates_option_draws_n_consecutive_seeds(cli, tmp_path):
    code, out, err = cli("a cat", *FAST, "--candidates", "3", "--seed", "40", "-o", tmp_path, "--json")
    assert code == 0, err
    res = json.loads(out)
    job = Path(res["run_dir"])
    assert sorted(c["seed"] for c in res["ranking"]) == [40, 41, 42]
    assert sorted(p.name for p in (job / "candidates").iterdir()) == ["seed-40", "seed-41", "seed-42"]
    _check_ranking(res["ranking"], "a cat")
    record = json.loads((job / "run.json").read_text())
    assert record["ranking"] == res["ranking"] and (job / "best.png").is_file()
    images = [np.asarray(Image.open(c["image"])) for c in res["ranking"]]
    assert not np.array_equal(images[0], images[1])  # other seeds, other images
    code, _, err = cli("a cat", *FAST, "--candidates", "0", "-o", tmp_path)
    assert code == 2 and "--candidates" in err and "Traceback" not in err


def test_reproduce_gives_the_same_pixels(cli, tmp_path):
    code, out, err = cli("a red house | fog:-0.5", *FAST, "--seed", "11", "-o", tmp_path / "a", "--json")
    assert code == 0, err
    first = json.loads(out)["image"]
    code, out, err = cli("reproduce", first, "-o", tmp_path / "b", "--json")
    assert code == 0, err
    again = json.loads(out)["image"]
    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(again)))


def test_reproduce_refuses_a_png_without_settings(cli, tmp_path):
    plain = tmp_path / "plain.png"
    Image.new("RGB", (8, 8)).save(plain)
    code, _, err = cli("reproduce", plain)
    assert code == 2 and "no pixgen settings" in err


def _batch_cmd(f, out, *extra):
    """A batch of 40-step smoke jobs saving every step, on one thread (so pixels compare)."""
    return [sys.executable, "-m", "pixgen", "batch", str(f), "-o", str(out), *SMOKE, "--set", "iterations=40",
            "--save-every", "1", "--set", "threads=1", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted_batch(tmp_path_factory):
    """The prompt file and the folder of the same batch run without interruption."""
    root = tmp_path_factory.mktemp("batch")
    f = _write(root, "p.txt", "a red house\na blue lake\n")
    subprocess.run(_batch_cmd(f, root / "full"), check=True, capture_output=True, timeout=300)
    return f, root / "full"


def _steps_done(job_dir):
    try:
        return json.loads((job_dir / "run.json").read_text()).get("steps_done", 0)
    except (OSError, ValueError):
        return 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_batch_resume_continues_an_interrupted_job_from_its_state(tmp_path, uninterrupted_batch, sig):
    """Preemption (SIGTERM: the step under way finishes and its state is saved) or a kill -9
    (the last saved state): `batch --resume` goes on from there, bit-identical, without redoing
    the job from step 0."""
    from safetensors.torch import load_file

    f, full = uninterrupted_batch
    out = tmp_path / "out"
    proc = subprocess.Popen(_batch_cmd(f, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job = out / "0002-a-blue-lake"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and _steps_done(job) < 10:
        time.sleep(0.01)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == (130 if sig == signal.SIGTERM else -signal.SIGKILL)
    saved = int(load_file(str(job / "state.safetensors"))["step"])
    assert 9 <= saved < 40
    if sig == signal.SIGTERM:  # at most the step under way is lost: none, here
        assert saved == _steps_done(job) and json.loads((job / "run.json").read_text())["interrupted"]
    else:
        assert not (job / "final.png").exists()
    first_frame = (job / "frames" / "000001.png").stat().st_mtime_ns
    done = subprocess.run([*_batch_cmd(f, out), "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (job / "frames" / "000001.png").stat().st_mtime_ns == first_frame  # continued, not redone
    for name in ("0001-a-red-house", "0002-a-blue-lake"):
        assert np.array_equal(np.asarray(Image.open(out / name / "final.png")),
                              np.asarray(Image.open(full / name / "final.png")))  # fmt: skip
    a, b = load_file(str(job / "state.safetensors")), load_file(str(full / job.name / "state.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in b)
    record = json.loads((job / "run.json").read_text())
    assert record["steps_done"] == 40 and len(record["losses"]) == 40 and isinstance(record["clip_score"], float)


def _figures(page: str) -> int:
    return page.count("<figure>")


def test_gallery_of_concurrent_shards_shows_every_job(tmp_path):
    f = _write(tmp_path, "p.txt", "a cat\na dog\na fox\nan owl\n")
    out = tmp_path / "o"
    cmds = [[sys.executable, "-m", "pixgen", "batch", str(f), "-o", str(out), "--shard", f"{k}/2", *FAST]
            for k in (0, 1)]  # fmt: skip
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    page = (out / "index.html").read_text()
    assert _figures(page) == 4 and all(f"<b>{p}</b>" in page for p in ("a cat", "a dog", "a fox", "an owl"))
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.size == (4 * (192 + 8), 192 + 24)  # four tiles in a row


def _fake_finished_job(out, name, prompt):
    """A finished job folder as a run leaves it: final.png and a finished run.json."""
    job = out / name
    job.mkdir(parents=True)
    Image.new("RGB", (16, 16), "red").save(job / "final.png")
    record = {"settings": {"prompt": prompt, "seed": 1}, "finished": True, "seconds": 1.0, "clip_score": 0.5}
    (job / "run.json").write_text(json.dumps(record))


def test_gallery_waits_for_the_lock_and_reads_the_folder(tmp_path):
    import threading

    from filelock import FileLock

    from pixgen.apps.batch import update_gallery

    out = tmp_path / "o"
    _fake_finished_job(out, "0001-a-cat", "a cat")
    _fake_finished_job(out, "0007-a-dog", "a dog")  # another shard's job
    (out / "0002-a-fox").mkdir()  # an unfinished job: left out
    (out / "0002-a-fox" / "run.json").write_text(json.dumps({"settings": {"prompt": "a fox"}, "finished": False}))
    lock = FileLock(str(out / ".gallery.lock"))
    with lock:  # another shard is writing the gallery
        writer = threading.Thread(target=update_gallery, args=(out,))
        writer.start()
        writer.join(timeout=1.0)
        assert writer.is_alive() and not (out / "index.html").exists()
    writer.join(timeout=30)
    page = (out / "index.html").read_text()
    assert _figures(page) == 2 and "a cat" in page and "a dog" in page and "a fox" not in page
