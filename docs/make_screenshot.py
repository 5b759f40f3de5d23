"""Take the README's screenshot of the studio (`pixgen serve --preset shapes`) in headless Chromium.

.venv/bin/python docs/make_screenshot.py      # writes docs/serve.png

A real server on the shapes models, driven by Playwright through the OS's Chromium (apt-get
install -y chromium): two prompts at the preset (seeds 2 and 0), uncurated, then a 2x2 sweep
(seed 0-1 by prior temperature 0.7 and 1), and the page as a user sees it: the sweep's labelled
grid under the preview, both runs in the history.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MAKES = ("serve.png",)  # the README image this script writes
OUT = Path(__file__).resolve().parent
PROMPTS = (("a red circle on a blue background", 0), ("a green square on a yellow background", 2))
SWEEP = ("seed=0,1", "prior_temperature=0.7,1")


def chromium() -> str:
    found = os.environ.get("PIXGEN_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
    )
    if found is None:
        sys.exit("make_screenshot: no chromium (apt-get install -y chromium)")
    return found


def serve(outputs: Path):
    """A started studio on a free loopback port: (its address, a function that stops it)."""
    import uvicorn

    from pixgen.cli.serve import bind
    from pixgen.serve.app import create_app
    from pixgen.serve.form import server_settings
    from pixgen.serve.jobs import JobQueue, load_server_models

    settings = server_settings("shapes")
    queue = JobQueue(load_server_models(settings), outputs).start()
    sock = bind("127.0.0.1", 0)
    info = {"vqgan": settings.vqgan, "clip": list(settings.clip), "output_dir": "outputs"}
    app = create_app(queue, "shapes", allowed_hosts=["127.0.0.1", "localhost"], info=info)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(30)
        sock.close()

    return f"http://127.0.0.1:{sock.getsockname()[1]}/", stop


def main() -> None:
    from playwright.sync_api import sync_playwright

    url, stop = serve(Path(tempfile.mkdtemp(prefix="pixgen-screenshot-")))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']")
            for i, (prompt, seed) in enumerate(PROMPTS):
                page.fill("#f-prompt", prompt)
                page.fill("#f-seed", str(seed))
                page.click("#generate")
                page.wait_for_function(
                    f"document.querySelectorAll('#history .run').length >= {i + 1} && "
                    "document.getElementById('status').dataset.state === 'done'",
                    timeout=120_000,
                )
            page.locator("#modes label", has_text="sweep").click()
            page.fill("#m-x", SWEEP[0])
            page.fill("#m-y", SWEEP[1])
            page.click("#generate")
            page.wait_for_selector("#status[data-state='done']", timeout=240_000)
            # the sweep's labelled grid under the preview (its last cell), and every picture has loaded
            page.wait_for_function(
                "(() => { const p = document.getElementById('preview');"
                " const imgs = [p, ...document.querySelectorAll('#sweep img, #history .run img')];"
                " return imgs.length === 7 && imgs.every((i) => i.complete && i.naturalWidth > 0); })()",
                timeout=60_000,
            )
            page.screenshot(path=str(OUT / "serve.png"), full_page=True)
            browser.close()
    finally:
        stop()
    print(f"wrote {OUT / 'serve.png'}")


if __name__ == "__main__":
    main()
