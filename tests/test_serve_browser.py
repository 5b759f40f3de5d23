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
        page.locator("#history .run .reproduce").first.click()  # "reuse settings"
        assert page.input_value("#f-prompt") == "a green square on a yellow background"
        assert page.input_value("#f-iterations") == "12"
        page.locator("#history .run .use-init").first.click()
        assert page.input_value("#f-init_image").endswith("/final.png")
        shot = tmp_path / "serve.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000


@pytest.fixture
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(server)
        page.wait_for_selector("body[data-ready='1']")
        yield page
        browser.close()


def _mode(page, name: str) -> None:
    page.locator("#modes label", has_text=name).click()


def _generate(page, prompt: str = "a red circle on a blue background") -> None:
    page.fill("#f-prompt", prompt)
    page.fill("#f-seed", "1")
    page.evaluate("document.querySelector('details').open = true")  # advanced
    page.fill("#f-prior_samples", "4")
    page.click("#generate")
    page.wait_for_selector("#status[data-state='done']", timeout=120_000)


def test_a_2x2_sweep_appears_as_a_labelled_grid(page):
    _mode(page, "sweep")
    page.fill("#m-x", "seed=1,2")
    page.fill("#m-y", "prior_temperature=0.5,1")
    _generate(page)
    headers = page.locator("#sweep th").all_inner_texts()
    assert {"seed=1", "seed=2", "prior_temperature=0.5", "prior_temperature=1"} <= set(headers)
    page.wait_for_function("[...document.querySelectorAll('#sweep img')].every((i) => i.complete && i.naturalWidth)")
    assert page.locator("#sweep img").count() == 4
    assert page.get_attribute("#grid-png", "href").endswith("/grid.png")


DROP = """async ([url, name]) => {
    const blob = await (await fetch(url)).blob();
    const data = new DataTransfer();
    data.items.add(new File([blob], name, { type: "image/png" }));
    document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true }));
}"""


def test_a_dropped_png_restores_its_settings(page, tmp_path):
    page.evaluate("document.querySelector('details').open = true")  # advanced
    page.fill("#f-cutn", "7")
    _generate(page, "a green square on a yellow background")
    page.wait_for_selector("#history .run")
    final = page.get_attribute("#history .run img", "src")
    page.fill("#f-prompt", "something else")
    page.fill("#f-cutn", "32")
    page.fill("#f-seed", "")
    page.evaluate(DROP, [final, "final.png"])
    page.wait_for_function("document.getElementById('note').textContent.includes('restored')")
    assert page.input_value("#f-prompt") == "a green square on a yellow background"
    assert page.input_value("#f-cutn") == "7" and page.input_value("#f-seed") == "1"
    # a PNG without settings: a clear message, the form kept
    plain = (
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLv"
        "AAAAAElFTkSuQmCC"
    )
    page.evaluate(DROP, [plain, "plain.png"])
    page.wait_for_function("document.getElementById('error').textContent.includes('no pixgen settings')")
    assert page.input_value("#f-prompt") == "a green square on a yellow background"


def test_sample_then_polish_makes_a_run(page):
    _mode(page, "sample")
    page.fill("#m-keep", "2")
    page.fill("#m-polish", "2")
    _generate(page)
    assert page.locator("#results .polish").count() == 2
    page.locator("#results .polish").nth(1).click()
    page.wait_for_function("document.querySelectorAll('#history .run').length === 2", timeout=120_000)
    tags = page.locator("#history .run .tag").all_inner_texts()
    assert any("2 steps" in t for t in tags) and any("samples" in t for t in tags), tags


def test_a_variation_appears_in_the_history(page):
    _generate(page)
    page.wait_for_selector("#history .run")
    page.locator("#history .run .vary").first.click()
    assert page.input_value("#m-image").endswith("/final.png")
    page.fill("#m-count", "1")
    page.click("#generate")
    page.wait_for_function("document.querySelectorAll('#history .run').length === 2", timeout=120_000)
    assert any("variation" in t for t in page.locator("#history .run .tag").all_inner_texts())


def test_options_apply_per_drawer_checks_come_first_and_the_preview_stays_in_view(page):
    page.evaluate("document.querySelector('details').open = true")  # advanced
    assert page.locator("#box-pixel_size").is_hidden() and page.locator("#box-prior_samples").is_visible()
    page.select_option("#f-drawer", "pixel")
    assert page.locator("#box-pixel_size").is_visible() and page.input_value("#f-iterations") == "15"
    page.fill("#f-prompt", "a red circle on a blue background")
    page.fill("#f-size", "5x5")
    page.click("#generate")  # the server's own check refuses it before anything is queued
    page.wait_for_selector("#box-size.bad")
    assert "too small" in page.inner_text("#error") and page.locator("#queue li").count() == 0
    page.fill("#f-size", "64x64")
    # advanced is open: the form scrolls, the preview and status stay in view
    page.fill("#f-iterations", "1")
    page.locator("#generate").scroll_into_view_if_needed()
    page.click("#generate")
    page.wait_for_selector("#status[data-state='done']", timeout=120_000)
    for box in (page.locator("#preview").bounding_box(), page.locator("#status").bounding_box()):
        assert 0 <= box["y"] and box["y"] + box["height"] <= 800


def test_a_region_prompt_runs_and_the_preview_shows_its_boxes(page):
    prompt = "a red circle on a white background @left | a blue square on a white background @right"
    _generate(page, prompt)
    page.wait_for_selector("#boxes .box")
    boxes = page.locator("#boxes .box")
    assert boxes.count() == 2 and boxes.nth(0).inner_text() == "a red circle on a white background"
    left, right = (boxes.nth(i).bounding_box() for i in range(2))
    frame = page.locator("#frame").bounding_box()
    assert abs(left["x"] - frame["x"]) < 2 and abs(left["width"] - frame["width"] / 2) < 2
    assert abs(right["x"] - (frame["x"] + frame["width"] / 2)) < 2
    assert page.locator("#history img").count() >= 1
    page.uncheck("#show-boxes")
    assert page.locator("#boxes .box").count() == 0


def test_a_lost_server_is_shown_and_the_page_reconnects(page):
    page.route("**/api/jobs", lambda route: route.abort())  # the server gone, as the page sees it
    page.wait_for_selector("body[data-conn='lost']", timeout=10_000)
    assert page.locator("#conn").is_visible() and "lost the server" in page.inner_text("#status")
    page.unroute("**/api/jobs")
    page.wait_for_selector("body[data-conn='ok']", timeout=10_000)
    assert page.locator("#conn").is_hidden()
