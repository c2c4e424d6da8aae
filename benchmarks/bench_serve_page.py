"""The ``rave serve`` page in headless Chromium: time to first preview, slider frame time.

Starts the server in this process with a model, opens the page in Debian's chromium
through Playwright, uploads a 12-megapixel JPEG through the file input (the same code path
as a drop) and measures the time until its preview is drawn, then moves the strength
slider and reads the page's own frame time (``window.raveLastFrameMs``: computing
``I / L**S`` for the preview and drawing it). With ``--screenshots DIR`` it also uploads a
few photos (and one broken file) and saves the page at 1280 px and 390 px wide.

    python benchmarks/bench_serve_page.py --photo ../shared/data/dicm/01.jpg \
        --screenshots docs/
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, required=True, help="scaled to 4000x3000")
    parser.add_argument("--model", default="default")
    parser.add_argument("--screenshots", type=Path, help="folder for the page's pictures")
    parser.add_argument("--extra", type=Path, nargs="*", default=[], help="more photos shown")
    parser.add_argument("--no-timing", action="store_true", help="screenshots only")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from rave.api import get_model
    from rave.server import make_server
    from rave.server.app import Limits

    limits = Limits(time_limit=3600)  # a shared, loaded machine must not turn this into a 503
    httpd = make_server(get_model(args.model), "127.0.0.1", 0, limits=limits, log_line=print)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_port}/"
    work = Path(tempfile.mkdtemp())
    big = work / "twelve-megapixels.jpg"
    with Image.open(args.photo) as image:
        image.convert("RGB").resize((4000, 3000), Image.Resampling.LANCZOS).save(big, quality=92)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(url)
        if not args.no_timing:
            time_page(page, big)
        if args.screenshots:
            screenshots(page, args.screenshots, [*args.extra, args.photo], work)
        browser.close()
    httpd.stop()
    shutil.rmtree(work)


def time_page(page: Any, big: Path) -> None:
    """Prints the time from upload to first preview and the slider's frame times."""
    started = time.perf_counter()
    page.set_input_files("#file", str(big))
    page.wait_for_function("() => window.raveLastFrameMs !== undefined", timeout=3_600_000)
    first_preview = time.perf_counter() - started
    frames = []
    for step in range(40):
        page.fill("#strength", f"{(step % 20) / 10:.2f}")
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => r()))")
        frames.append(page.evaluate("window.raveLastFrameMs"))
    size = page.evaluate(
        "[document.getElementById('view').width, document.getElementById('view').height]"
    )
    print(
        f"12 MP JPEG ({big.stat().st_size / 1e6:.1f} MB): "
        f"upload to first preview {first_preview:.1f} s"
    )
    print(
        f"strength slider: preview {size[0]}x{size[1]}, frame median "
        f"{statistics.median(frames):.1f} ms, max {max(frames):.1f} ms over {len(frames)}"
    )


def screenshots(page: Any, folder: Path, photos: list[Path], work: Path) -> None:
    """The page with a few photos (at most 640 px, to be quick) and one broken file."""
    small = []
    for photo in photos:
        with Image.open(photo) as image:
            image = image.convert("RGB")
            image.thumbnail((640, 640))
            small.append(work / photo.name)
            image.save(small[-1], quality=92)
    bad = work / "not-a-photo.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a JPEG")
    page.set_input_files("#file", [str(p) for p in small] + [str(bad)])
    total = page.evaluate("document.querySelectorAll('#list li').length")
    page.wait_for_function(
        f"() => document.getElementById('status').textContent.startsWith('{total} photos')",
        timeout=3_600_000,
    )
    page.locator("#list .thumb").nth(1).click()
    page.fill("#strength", "1.2")
    page.fill("#split", "50")
    page.wait_for_timeout(300)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / "serve_desktop.png"))
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    page.screenshot(path=str(folder / "serve_390px.png"), full_page=True)


if __name__ == "__main__":
    main()
