"""`pixgen serve`: the HTTP API, the job queue, SSE progress, the history and the safety points,
through Starlette's TestClient on the smoke (and once the shapes) models."""

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

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from PIL import Image  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from pixgen.serve import app as app_module  # noqa: E402
from pixgen.serve.app import create_app  # noqa: E402
from pixgen.serve.form import server_settings  # noqa: E402
from pixgen.serve.jobs import JobQueue, load_server_models  # noqa: E402

FAST = {"iterations": 3, "save_every": 1}


@pytest.fixture(scope="module")
def smoke_models():
    return load_server_models(server_settings("smoke"))


def make_client(models, root: Path, preset="smoke", **kw) -> TestClient:
    queue = JobQueue(models, root).start()
    return TestClient(create_app(queue, preset, **kw))


@pytest.fixture
def client(smoke_models, tmp_path):
    with make_client(smoke_models, tmp_path / "out") as c:
        yield c


def wait(client, job_id: str, states=("done", "cancelled", "failed"), timeout=60.0, **headers) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        snap = client.get(f"/api/jobs/{job_id}", headers=headers).json()
        if snap["state"] in states:
            return snap
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} still {snap['state']} after {timeout} s")


def submit(client, **data) -> dict:
    r = client.post("/api/jobs", json={"prompt": "a red circle", **FAST, **data})
    assert r.status_code == 202, r.text
    return r.json()


def test_form_comes_from_the_settings_declarations(client):
    from pixgen.serve.form import SERVER_KEYS
    from pixgen.settings import FIELDS

    form = client.get("/api/form").json()
    fields = {f["name"]: f for f in form["fields"]}
    assert set(fields) == set(FIELDS) - set(SERVER_KEYS)
    assert fields["prompt"]["group"] == "common" and fields["tv_weight"]["group"] == "advanced"
    assert fields["size"]["default"] == "64x64" and fields["iterations"]["default"] == 10  # the smoke preset's
    assert fields["cutn"]["hi"] == 1024 and fields["optimizer"]["choices"][0] == "adam"
    assert fields["cutn"]["help"] == FIELDS["cutn"].metadata["help"]
    assert client.get("/").status_code == 200 and "pixgen studio" in client.get("/").text


def test_a_job_streams_progress_and_writes_a_cli_run_folder(client, tmp_path):
    job = submit(client, seed=3)
    assert client.get(f"/api/jobs/{job['id']}").status_code == 200
    events = []
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: {}":
                events.append(json.loads(line[6:]))
    steps = [e["step"] for e in events if e["state"] == "running"]
    assert steps and max(steps) == 3
    last = events[-1]
    assert last["state"] == "done" and last["seed"] == 3 and last["eta"] == 0
    assert last["first_step_seconds"] > 0
    run_dir = tmp_path / "out" / last["run"]
    assert {p.name for p in run_dir.iterdir()} >= {"final.png", "run.json", "progress.gif", "frames"}
    assert len(list((run_dir / "frames").glob("*.png"))) == 3
    record = json.loads((run_dir / "run.json").read_text())
    assert record["steps_done"] == 3 and record["interrupted"] is False and record["settings"]["seed"] == 3
    for url in [last["files"]["final"], last["files"]["gif"], f"/api/jobs/{job['id']}/final.png"]:
        r = client.get(url)
        assert r.status_code == 200 and len(r.content) > 0
    r = client.get(f"/api/jobs/{job['id']}/preview.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def test_same_pixels_as_the_cli_for_the_same_settings(client, tmp_path, cli):
    job = wait(client, submit(client, seed=5)["id"])
    code, _, _ = cli("a red circle", "--preset", "smoke", "-i", 3, "--save-every", 1, "--seed", 5, "-o", tmp_path / "c")
    assert code == 0
    web = Image.open(tmp_path / "out" / job["run"] / "final.png")
    (cli_run,) = (tmp_path / "c").iterdir()
    assert np.array_equal(np.asarray(web), np.asarray(Image.open(cli_run / "final.png")))


def test_cancel_stops_after_the_step_and_keeps_the_image(client, tmp_path):
    job = submit(client, iterations=2000, save_every=0)
    wait(client, job["id"], ("running",))
    while client.get(f"/api/jobs/{job['id']}").json()["step"] < 2:
        time.sleep(0.01)
    assert client.post(f"/api/jobs/{job['id']}/cancel").status_code == 200
    snap = wait(client, job["id"])
    assert snap["state"] == "cancelled" and 2 <= snap["step"] < 2000
    run_dir = tmp_path / "out" / snap["run"]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["interrupted"] is True and record["steps_done"] == snap["step"]
    assert (run_dir / "final.png").is_file() and (run_dir / "state.safetensors").is_file()


def test_jobs_queue_one_at_a_time_with_positions(client, tmp_path):
    first = submit(client, iterations=2000, save_every=0)
    second, third = submit(client), submit(client)
    wait(client, first["id"], ("running",))
    assert client.get(f"/api/jobs/{second['id']}").json()["position"] == 1
    assert client.get(f"/api/jobs/{third['id']}").json()["position"] == 2
    listed = client.get("/api/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [first["id"], second["id"], third["id"]]
    client.post(f"/api/jobs/{second['id']}/cancel")  # queued: leaves the queue, no folder
    assert client.get(f"/api/jobs/{second['id']}").json()["state"] == "cancelled"
    assert client.get(f"/api/jobs/{third['id']}").json()["position"] == 1
    client.post(f"/api/jobs/{first['id']}/cancel")
    assert wait(client, third["id"])["state"] == "done"
    assert wait(client, first["id"])["state"] == "cancelled"
    assert len([d for d in (tmp_path / "out").iterdir() if not d.name.startswith(".")]) == 2


def test_a_stream_that_goes_away_leaves_its_job_running(client):
    job = submit(client, iterations=12)
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as r:
        next(r.iter_lines())  # read one event, then hang up
    assert wait(client, job["id"])["state"] == "done"


def test_history_survives_a_restart_and_offers_reproduce_and_init(smoke_models, tmp_path):
    root = tmp_path / "out"
    with make_client(smoke_models, root) as c:
        job = wait(c, submit(c, seed=9, negative="blue\ngreen")["id"])
    with make_client(smoke_models, root) as c:  # a new server on the same folder
        (run,) = c.get("/api/runs").json()["runs"]
        assert run["run"] == job["run"] and run["prompt"] == "a red circle" and run["seed"] == 9
        assert run["form"]["size"] == "64x64" and run["form"]["negative"] == "blue\ngreen"
        assert c.get(run["files"]["final"]).status_code == 200
        again = wait(c, c.post("/api/jobs", json=dict(run["form"], init_image=run["init"])).json()["id"])
        assert again["state"] == "done"
        record = json.loads((root / again["run"] / "run.json").read_text())
        assert record["settings"]["init_image"] == str((root / job["run"] / "final.png").resolve())
        assert record["settings"]["negative"] == ["blue", "green"]
    killed = root / "20990101-000000-killed"  # a run killed before its image: run.json only, unfinished
    killed.mkdir()
    (killed / "run.json").write_text(json.dumps({"settings": record["settings"], "finished": False}))
    with make_client(smoke_models, root) as c:
        assert [r["run"] for r in c.get("/api/runs").json()["runs"]] == [again["run"], job["run"]]


def test_shapes_models_job(tmp_path):
    models = load_server_models(server_settings("shapes"))
    with make_client(models, tmp_path, preset="shapes") as c:
        snap = wait(c, submit(c, prompt="a red circle on a blue background", iterations=2)["id"])
        assert snap["state"] == "done" and snap["total"] == 2


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"not json", "JSON object"),
        (b"[1, 2]", "JSON object"),
        (b'{"iterations": 3}', "prompt"),
        (b'{"prompt": "x", "bogus": 1}', "bogus"),
        (b'{"prompt": "x", "vqgan": "tiny"}', "fixed by the server"),
        (b'{"prompt": "x", "output_dir": "/tmp"}', "fixed by the server"),
        (b'{"prompt": "x", "size": "99999x64"}', "size"),
        (b'{"prompt": "x", "cutn": 5000}', "cutn"),
        (b'{"prompt": "x", "iterations": -1}', "iterations"),
        (b'{"prompt": "x", "iterations": "many"}', "iterations"),
        (b'{"prompt": "x", "optimizer": "sgd"}', "optimizer"),
        (b'{"prompt": "x", "init_image": "../../etc/passwd"}', "init_image"),
        (b'{"prompt": "x", "init_image": "/etc/hostname"}', "init_image"),
        (b'{"prompt": "x", "image_prompts": ["/etc/hostname:0.5"]}', "image_prompts"),
        (b'{"prompt": "x", "size": {"a": 1}}', "size"),
    ],
)
def test_bad_job_requests_get_a_clear_400(client, body, words):
    r = client.post("/api/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and words in r.json()["error"], r.text


def test_bad_requests_never_stop_the_server(client, monkeypatch):
    monkeypatch.setattr(app_module, "MAX_JOB_BYTES", 100)
    assert client.post("/api/jobs", content=b"{" + b" " * 200 + b"}").status_code == 413
    assert client.get("/api/jobs/nope").json() == {"error": "no job 'nope'"}
    assert client.get("/api/jobs/nope").status_code == 404
    assert client.post("/api/jobs/nope/cancel").status_code == 404
    assert client.get("/api/nothing").status_code == 404 and "error" in client.get("/api/nothing").json()
    assert client.delete("/api/jobs").status_code == 405
    assert wait(client, submit(client)["id"])["state"] == "done"


def test_only_files_under_the_output_dir_are_served(client, tmp_path):
    root = tmp_path / "out"
    (tmp_path / "secret.txt").write_text("secret")
    (root / "link").symlink_to(tmp_path / "secret.txt")
    (root / "ok.txt").write_text("fine")
    assert client.get("/files/ok.txt").text == "fine"
    for path in [
        "/files/../secret.txt",
        "/files/%2e%2e/secret.txt",
        "/files/..%2fsecret.txt",
        "/files/%2Fetc%2Fhostname",
        "/files//etc/hostname",
        "/files/link",
        "/files/",
        "/files/missing.png",
    ]:
        r = client.get(path)
        assert r.status_code == 404 and "secret" not in r.text, path


def test_uploads_pass_the_cli_image_checks(client, tmp_path, monkeypatch):
    import io

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, format="PNG")
    r = client.post("/api/uploads", content=buf.getvalue())
    assert r.status_code == 201
    path = r.json()["path"]
    assert path.startswith(".uploads/") and client.get(r.json()["url"]).status_code == 200
    assert wait(client, submit(client, init_image=path)["id"])["state"] == "done"
    r = client.post("/api/uploads", content=b"GIF89a not really")
    assert r.status_code == 400 and "cannot read image" in r.json()["error"]
    assert str(tmp_path) not in r.json()["error"]
    assert client.post("/api/uploads", content=b"").status_code == 400
    monkeypatch.setattr("pixgen.outputs.images.MAX_PIXELS", 100)  # a decompression bomb, in small
    r = client.post("/api/uploads", content=buf.getvalue())
    assert r.status_code == 400 and "too large" in r.json()["error"]
    monkeypatch.setattr(app_module, "MAX_UPLOAD_BYTES", 10)
    assert client.post("/api/uploads", content=buf.getvalue()).status_code == 413
    assert [p.name for p in (tmp_path / "out" / ".uploads").iterdir()] == [Path(path).name]  # no temp files left


def test_token_is_required_on_every_request(smoke_models, tmp_path):
    with make_client(smoke_models, tmp_path, token="s3cret") as c:
        for path in ["/", "/api/form", "/api/runs", "/files/x.png", "/api/jobs/x/events"]:
            assert c.get(path).status_code == 401, path
        assert c.post("/api/jobs", json={"prompt": "x"}).status_code == 401
        assert c.get("/api/form", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/form", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        page = c.get("/?token=s3cret")
        assert page.status_code == 200 and "pixgen_token" in page.headers["set-cookie"]
        assert c.get("/api/form").status_code == 200  # the cookie the page set


def test_cross_site_posts_and_foreign_hosts_are_refused(smoke_models, tmp_path):
    with make_client(smoke_models, tmp_path, allowed_hosts=["127.0.0.1", "localhost"]) as c:
        assert c.get("/api/form").status_code == 400  # Host: testserver (DNS rebinding)
        assert c.get("http://127.0.0.1/api/form").status_code == 200
    with make_client(smoke_models, tmp_path) as c:
        r = c.post("/api/jobs", json={"prompt": "x"}, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403


def test_help_imports_neither_torch_nor_the_server():
    code = (
        "import sys, pixgen.cli.app\n"
        "try: pixgen.cli.app.main(['serve', '--help'])\n"
        "except SystemExit: pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'starlette', 'uvicorn'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]") and "--port" in out


def test_serve_refuses_a_port_in_use_and_a_bad_host(cli):
    from pixgen.cli.serve import bind

    sock = bind("127.0.0.1", 0)
    try:
        code, _, err = cli("serve", "--preset", "smoke", "--port", sock.getsockname()[1])
    finally:
        sock.close()
    assert code == 2 and err.strip().count("\n") == 0 and "in use" in err
    code, _, err = cli("serve", "--preset", "smoke", "--host", "no.such.host.invalid", "--port", 0)
    assert code == 2 and "cannot serve on host" in err
    code, _, err = cli("serve", "--preset", "nope")
    assert code == 2 and "unknown preset" in err


def test_serve_on_all_interfaces_warns_and_generates_a_token(tmp_path):
    import httpx

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    args = ["serve", "--preset", "smoke", "--host", "0.0.0.0", "--port", "0", "-o", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "pixgen", *args], stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        while not any("token:" in line for line in lines):
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        text = "".join(lines)
        assert "warning" in text and "0.0.0.0" in text
        url = next(w for w in text.split() if w.startswith("http://"))
        base, token = url.split("/?token=")
        base = base.replace("0.0.0.0", "127.0.0.1")
        assert httpx.get(base + "/api/form").status_code == 401
        assert httpx.get(base + "/api/form", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 130 and "server stopped" in proc.stderr.read()


def test_limits_refusals_failures_and_cancels_never_wedge_the_queue(smoke_models, tmp_path):
    root = tmp_path / "out"
    queue = JobQueue(smoke_models, root, max_queued=1).start()
    with TestClient(create_app(queue, "smoke")) as c:
        for body, words in [
            ({"iterations": 1_000_000_000}, "'iterations'"),  # the settings' own bound
            ({"iterations": 2001}, "--max-steps"),  # the server's
            ({"size": "1100x64"}, "--max-size"),
        ]:
            r = c.post("/api/jobs", json={"prompt": "a cat", **body})
            assert r.status_code == 400 and words in r.json()["error"], r.text
        slow = submit(c, init_draws=32)  # about 8 s of scoring starts before its first step
        wait(c, slow["id"], ("running",))  # the worker has taken it: the queue is empty again
        queued = submit(c)
        r = c.post("/api/jobs", json={"prompt": "one too many", **FAST})
        assert r.status_code == 429 and "waiting" in r.json()["error"]
        assert c.post(f"/api/jobs/{slow['id']}/cancel").json()["status"] == "stopping…"
        snap = wait(c, slow["id"], timeout=10)
        assert snap["state"] == "cancelled" and snap["step"] == 0 and "before the first step" in snap["status"]
        assert wait(c, queued["id"])["state"] == "done"
        Image.new("RGB", (8, 8)).save(root / "gone.png")
        doomed = submit(c, init_image="gone.png")
        (root / "gone.png").unlink()  # fails when it runs
        assert wait(c, doomed["id"])["state"] == "failed"
        assert wait(c, submit(c, seed=1)["id"])["state"] == "done"  # the queue goes on


def test_the_serve_command_checks_the_host_header_of_loopback_servers(smoke_models, tmp_path):
    from pixgen.cli.serve import build_app, is_loopback

    assert is_loopback("::1") and is_loopback("[::1]") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    for host in ["127.0.0.1", "::1"]:
        with TestClient(build_app(JobQueue(smoke_models, tmp_path).start(), "smoke", host, None)) as c:
            assert c.get("/api/form").status_code == 400  # Host: testserver (DNS rebinding)
            assert c.get("/api/form", headers={"Host": "evil.example:7860"}).status_code == 400
            for name in ["127.0.0.1:7860", "localhost:7860", "[::1]:7860", "[::1]", "LOCALHOST"]:
                assert c.get("/api/form", headers={"Host": name}).status_code == 200, (host, name)
    with TestClient(build_app(JobQueue(smoke_models, tmp_path).start(), "smoke", "0.0.0.0", "tok")) as c:
        headers = {"Host": "studio.example", "Authorization": "Bearer tok"}
        assert c.get("/api/form", headers=headers).status_code == 200  # any name, with the token


def _serve(tmp_path):
    """A `pixgen serve` process on the smoke models and its base URL."""
    args = ["serve", "--preset", "smoke", "--port", "0", "-o", str(tmp_path), "--max-steps", "3000"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "pixgen", *args], stderr=subprocess.PIPE, text=True, env=env)
    line = ""
    while "serving on" not in line:
        line = proc.stderr.readline()
        if not line:
            proc.kill()
            raise AssertionError("the server did not start")
    return proc, next(w for w in line.split() if w.startswith("http://")).rstrip("/")


def _running_job(base, **body) -> dict:
    import httpx

    job = httpx.post(base + "/api/jobs", json={"prompt": "a cat", "iterations": 3000, "save_every": 0, **body}).json()
    while httpx.get(f"{base}/api/jobs/{job['id']}").json()["step"] < 2:
        time.sleep(0.05)
    return job


def _kept_and_interrupted(tmp_path) -> dict:
    (run,) = [d for d in tmp_path.iterdir() if not d.name.startswith(".")]
    assert (run / "final.png").is_file() and (run / "state.safetensors").is_file()
    record = json.loads((run / "run.json").read_text())
    assert record["interrupted"] is True and 2 <= record["steps_done"] < 3000
    return record


def test_sigterm_stops_the_server_within_seconds_and_the_job_keeps_its_image(tmp_path):
    """Slow steps (128x128, 32 cutouts): with no connection open the server is down before the
    running job has stopped and written its image, so the exit must wait for it (queue.close, in
    the app's shutdown and again in run_server); quitting at once would lose the image."""
    import httpx

    proc, base = _serve(tmp_path)
    try:
        assert httpx.post(base + "/api/jobs", json={"prompt": "a cat", "iterations": 3001}).status_code == 400
        _running_job(base, size="128x128", cutn=32)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        stopped = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and stopped < 10, (proc.returncode, stopped)
    _kept_and_interrupted(tmp_path)


def test_sigterm_stops_the_running_job_at_once_and_its_watchers_see_it_end(tmp_path):
    """The job is asked to stop on the signal itself (queue.stop), not once the open connections
    have drained: a client following its events sees it end as cancelled, image kept, before the
    server goes (else the stream is cut after the 2 s grace with the job still running)."""
    import httpx

    proc, base = _serve(tmp_path)
    events = []
    try:
        job = _running_job(base)
        with httpx.stream("GET", f"{base}/api/jobs/{job['id']}/events", timeout=30) as r:
            lines = r.iter_lines()
            next(lines)  # the stream is open: the server has a connection to drain
            proc.send_signal(signal.SIGTERM)
            try:
                for line in lines:
                    if line.startswith("data: {") and line != "data: {}":
                        events.append(json.loads(line.removeprefix("data: ")))
            except httpx.HTTPError:
                pass  # cut by the server
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert events and events[-1]["state"] == "cancelled" and "image kept" in events[-1]["status"], events[-1:]
    record = _kept_and_interrupted(tmp_path)
    assert record["steps_done"] == events[-1]["step"]


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"prompt": "x", "lr": Infinity}', "lr"),
        (b'{"prompt": "x", "lr": -Infinity}', "lr"),
        (b'{"prompt": "x", "ema": NaN}', "ema"),
        (b'{"prompt": "x", "prior_temperature": "nan"}', "prior_temperature"),
        (b'{"prompt": "x", "fps": "inf"}', "fps"),
        (b'{"prompt": "x", "zoom_shift": "nan,0"}', "zoom_shift"),
        (b'{"prompt": "x", "zoom_shift": [0, Infinity]}', "zoom_shift"),
        (b'{"prompt": "x", "prior_top_p": 1e-300}', "prior_top_p"),
    ],
)
def test_non_finite_job_requests_get_a_400_naming_the_key(client, body, key):
    r = client.post("/api/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400 and f"'{key}'" in r.json()["error"], r.text
    assert client.get("/api/jobs").json() == {"jobs": []}


def _strict(text: str):
    """JSON as a browser reads it: NaN and Infinity are errors."""

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_responses_and_events_never_carry_nan(smoke_models, tmp_path):
    queue = JobQueue(smoke_models, tmp_path).start()
    with TestClient(create_app(queue, "smoke")) as c:
        job = wait(c, submit(c)["id"])
        queue.get(job["id"]).loss = float("nan")  # as a step whose loss went NaN reports it
        queue.get(job["id"]).eta = float("inf")
        for url in (f"/api/jobs/{job['id']}", "/api/jobs"):
            r = c.get(url)
            assert r.status_code == 200 and "NaN" not in r.text and "Infinity" not in r.text
        assert _strict(c.get(f"/api/jobs/{job['id']}").text)["loss"] is None
        with c.stream("GET", f"/api/jobs/{job['id']}/events") as events:
            data = [line[6:] for line in events.iter_lines() if line.startswith("data: ")]
        assert _strict(data[0])["loss"] is None and _strict(data[0])["eta"] is None


def test_history_survives_damaged_and_non_finite_run_records(smoke_models, tmp_path):
    """A run.json with Infinity, NaN or the wrong shape (a run made before validation refused them,
    or edited by hand) is repaired or left out: /api/runs answers 200, before and after a restart."""
    root = tmp_path / "out"
    with make_client(smoke_models, root) as c:
        good = wait(c, submit(c, seed=3)["id"])
    record = json.loads((root / good["run"] / "run.json").read_text())
    damaged = {
        "lr-infinity": dict(record, settings=dict(record["settings"], lr=float("inf")), seconds=float("nan")),
        "zoom-nan": dict(record, settings=dict(record["settings"], zoom_shift=[float("nan"), 0.0])),
        "a-list": [1, 2],
        "no-settings": {"finished": True},
        "settings-a-string": {"settings": "lr=inf"},
        "size-a-word": dict(record, settings=dict(record["settings"], size="big")),
        "not-json": None,
    }
    for name, data in damaged.items():
        folder = root / f"20990101-000000-{name}"
        folder.mkdir()
        text = "{not json" if data is None else json.dumps(data)  # json.dumps writes NaN and Infinity
        (folder / "run.json").write_text(text)
        (folder / "final.png").write_bytes((root / good["run"] / "final.png").read_bytes())
    for _ in range(2):  # and again after a restart
        with make_client(smoke_models, root) as c:
            r = c.get("/api/runs")
            assert r.status_code == 200, r.text
            runs = {run["run"]: run for run in _strict(r.text)["runs"]}
            assert good["run"] in runs
            repaired = runs["20990101-000000-lr-infinity"]
            assert repaired["form"]["lr"] is None and repaired["seconds"] is None
            assert not {"a-list", "no-settings", "settings-a-string", "not-json"} & {n[16:] for n in runs}
