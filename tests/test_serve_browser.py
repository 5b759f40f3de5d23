"""`pixgen serve` in a real browser: headless Chromium (the OS package) driven by Playwright, on a
real uvicorn server with the shapes models. Skipped when chromium or playwright is missing.
(The README's screenshot is docs/make_screenshot.py's.)"""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("PIXGEN_CHROMIUM") or next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
if CHROMIUM is None:
    pytest.skip("browser tests: no chromium (apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser tests: no playwright (pip install playwright)")
uvicorn = pytest.importorskip("uvicorn")


@pytest.fixture
def server(tmp_path):
    from pixgen.cli.serve import bind
    from pixgen.serve.app import create_app
    from pixgen.serve.form import server_settings
    from pixgen.serve.jobs import JobQueue, load_server_models

    queue = JobQueue(load_server_models(server_settings("shapes")), tmp_path / "out").start()
    sock = bind("127.0.0.1", 0)
    app = create_app(
        queue,
        "shapes",
        allowed_hosts=["127.0.0.1", "localhost"],
        info={"vqgan": "shapes", "clip": ["shapes"], "output_dir": "outputs"},
    )
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    srv.should_exit = True
    thread.join(30)
    sock.close()


def test_studio_in_a_browser(server, tmp_path):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(server)
        page.wait_for_selector("body[data-ready='1']")
        assert page.locator("#f-tv_weight").count() == 1  # an advanced setting, from the declarations

        # a long job: the preview changes at least twice, then Cancel keeps its image
        page.fill("#f-prompt", "a red circle on a blue background")
        page.fill("#f-iterations", "2000")
        page.fill("#f-seed", "1")
        page.click("#generate")
        page.wait_for_function("Number(document.getElementById('preview').dataset.updates || 0) >= 2", timeout=60_000)
        page.click("#cancel")
        page.wait_for_selector("#status[data-state='cancelled']", timeout=60_000)

        # a short one to the end
        page.fill("#f-prompt", "a green square on a yellow background")
        page.fill("#f-iterations", "12")
        page.click("#generate")
        page.wait_for_selector("#status[data-state='done']", timeout=60_000)

        # the history, after a reload, has both; "reproduce" puts a run's settings back in the form
        page.reload()
        page.wait_for_selector("body[data-ready='1']")
        runs = page.locator("#history .run")
        assert runs.count() == 2
        text = page.inner_text("#history")
        assert "a red circle" in text and "a green square" in text and "cancelled at" in text
        page.locator("#history .run .reproduce").first.click()
        assert page.input_value("#f-prompt") == "a green square on a yellow background"
        assert page.input_value("#f-iterations") == "12"
        page.locator("#history .run .use-init").first.click()
        assert page.input_value("#f-init_image").endswith("/final.png")
        shot = tmp_path / "serve.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
