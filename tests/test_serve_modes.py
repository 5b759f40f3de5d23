"""The studio's modes and checks through the HTTP API (Starlette's TestClient): one check for the
form and the queue, sample then polish, vary, sweep, a dropped PNG's settings, delete inside the
output folder only, options per drawer, the favicon. Shapes models (the sample and the prior start
need a prior), few steps."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from tests.test_serve import make_client, wait

pytest.importorskip("starlette")

PROMPT = "a red circle on a blue background"


@pytest.fixture(scope="module")
def shapes_models():
    from pixgen.serve.form import server_settings
    from pixgen.serve.jobs import load_server_models

    return load_server_models(server_settings("shapes"))


@pytest.fixture
def client(shapes_models, tmp_path):
    with make_client(shapes_models, tmp_path / "out", preset="shapes") as c:
        yield c


def post(client, path="/api/jobs", **data):
    return client.post(path, json={"prompt": PROMPT, "seed": 1, "prior_samples": 4, **data})


@pytest.mark.parametrize(
    "data, key",
    [
        ({"size": "5x5"}, "size"),  # passed the form's bounds before; the job then failed
        ({"size": "5x5", "init": "tokens"}, "size"),  # the VQGAN's factor, without the prior start
        ({"size": "5x5", "drawer": "pixel"}, "size"),
        ({"iterations": 99999}, "iterations"),
        ({"cutn": 0}, "cutn"),
        ({"mode": "sample", "keep": 9}, None),
        ({"mode": "sweep", "x": "colour=red"}, None),
        ({"mode": "sweep", "x": "cutn=4,0"}, "cutn"),
        ({"mode": "paint"}, None),
    ],
)
def test_the_form_check_is_the_servers_check(client, data, key):
    checked, submitted = post(client, "/api/check", **data), post(client, **data)
    assert checked.status_code == submitted.status_code == 400
    assert checked.json() == submitted.json() and checked.json()["key"] == key
    assert client.get("/api/jobs").json()["jobs"] == []  # nothing was queued
    assert post(client, "/api/check").json() == {"ok": True, "regions": [], "size": [64, 64]}
    two = post(client, "/api/check", prompt="a red circle @left | a blue square @0.5,0,1,0.5").json()
    assert two["regions"] == [
        {"text": "a red circle", "box": [0.0, 0.0, 0.5, 1.0]},
        {"text": "a blue square", "box": [0.5, 0.0, 1.0, 0.5]},
    ]
    assert two["size"] == [128, 128]  # the shapes preset's regions: entry


def test_each_drawer_under_the_shapes_preset_runs_with_its_own_defaults(client):
    form = client.get("/api/form").json()
    fields = {f["name"]: f for f in form["fields"]}
    assert fields["pixel_size"]["applies"] == {"drawer": "pixel"} and fields["strokes"]["applies"] == {
        "drawer": "lines"
    }
    assert fields["prior_temperature"]["applies"] == {"init": "prior"} and fields["cutn"]["applies"] == {}
    pixel = form["drawer_defaults"]["pixel"]
    assert pixel["iterations"] == 15 and pixel["pixel_size"] == "16x16"  # the preset's drawers: entry
    assert form["drawer_defaults"]["vqgan"]["iterations"] == 0  # picking vqgan again puts its own back
    snap = wait(client, post(client, drawer="pixel", **{**pixel, "iterations": 1}).json()["id"])
    assert snap["state"] == "done" and snap["drawer"] == "pixel"
    (run,) = client.get("/api/runs").json()["runs"]
    assert run["drawer"] == "pixel"


def test_sample_then_polish_makes_a_run(client, tmp_path):
    snap = wait(client, post(client, mode="sample", keep=2).json()["id"])
    assert snap["state"] == "done" and len(snap["samples"]) == 2
    info = client.post("/api/pnginfo", content=client.get("/files/" + snap["samples"][1]).content).json()
    assert info["form"]["prior_rank"] == 2 and info["form"]["iterations"] == 0
    polish = wait(client, client.post("/api/jobs", json=dict(info["form"], iterations=2)).json()["id"])
    assert polish["state"] == "done"
    record = json.loads((tmp_path / "out" / polish["run"] / "run.json").read_text())
    assert record["start"]["rank"] == 2 and record["steps_done"] == 2
    kinds = sorted(r["kind"] for r in client.get("/api/runs").json()["runs"])
    assert kinds == ["run", "sample"]


def test_vary_queues_variations_that_reach_the_history(client):
    first = wait(client, post(client).json()["id"])
    r = client.post(
        "/api/jobs", json={"mode": "vary", "image": f"{first['run']}/final.png", "strength": 0.5, "count": 2}
    )
    assert r.status_code == 202, r.text
    for job in r.json()["jobs"]:
        assert wait(client, job["id"])["state"] == "done"
    runs = client.get("/api/runs").json()["runs"]
    assert sorted(r["kind"] for r in runs) == ["run", "vary", "vary"]
    bad = client.post("/api/jobs", json={"mode": "vary", "image": "../../etc/passwd"})
    assert bad.status_code == 400 and "output folder" in bad.json()["error"]


def test_a_sweep_is_a_labelled_grid(client, tmp_path):
    r = post(client, mode="sweep", x="seed=1,2", y="prior_temperature=0.5,1")
    snap = wait(client, r.json()["id"])
    assert snap["state"] == "done", snap
    grid = snap["grid"]
    assert grid["axes"] == {"x": ["seed=1", "seed=2"], "y": ["prior_temperature=0.5", "prior_temperature=1"]}
    assert len(grid["cells"]) == 4 and all(client.get(c).status_code == 200 for c in grid["cells"])
    assert client.get(grid["png"]).status_code == 200


def test_a_dropped_png_without_settings_is_one_clear_message(client):
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    r = client.post("/api/pnginfo", content=buf.getvalue())
    assert (
        r.status_code == 400
        and r.json()["error"] == "the dropped image carries no pixgen settings (was it made by pixgen?)"
    )
    assert client.post("/api/pnginfo", content=b"not a png").status_code == 400


def test_delete_removes_a_run_folder_inside_the_output_folder_only(client, tmp_path):
    snap = wait(client, post(client).json()["id"])
    outside = tmp_path / "keep"
    outside.mkdir()
    (outside / "run.json").write_text("{}")
    (tmp_path / "out" / "link").symlink_to(outside)
    for name in ("..", "../keep", "link", ".uploads", "nothing-here"):
        assert client.delete(f"/api/runs/{name}").status_code in (404, 405), name
    assert (outside / "run.json").is_file()
    assert client.delete(f"/api/runs/{snap['run']}").status_code == 200
    assert not (tmp_path / "out" / snap["run"]).exists() and client.get("/api/runs").json()["runs"] == []


def test_favicon(client):
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
