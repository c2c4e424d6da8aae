"""The ``rave serve`` page driven in headless Chromium (Playwright + Debian's chromium).

Playwright's own browser download cannot work offline, so the system Chromium is used by
its path (``RAVE_CHROMIUM`` or ``chromium`` on PATH). Without one these tests skip with a
message; in CI (``CI=true``) they fail instead, as ``.ci/run`` installs it.
"""

from __future__ import annotations

import io
import itertools
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from rave.network import EnhancementNet
from rave.server import make_server
from rave.session import Enhancer

# About 35 s in all (Chromium start-up, six pages): slow lane, which CI runs.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(light_half_net) -> Iterator[str]:
    httpd = make_server(light_half_net, "127.0.0.1", 0, log_line=lambda line: None)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.stop()


@pytest.fixture
def page(browser, site) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    page = context.new_page()
    page.goto(site + "/")
    yield page
    context.close()


def _dark(height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.03, 0.3, width)[None, :, None] * np.ones((height, 1, 3))
    ramp[..., 2] *= 0.8
    return np.clip((ramp + rng.normal(0, 0.01, ramp.shape)) * 255, 0, 255).astype(np.uint8)


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _jpeg_with_metadata(path: Path, pixels: np.ndarray) -> Path:
    exif = Image.Exif()
    exif[0x010F] = "rave-test-camera"  # Make
    Image.fromarray(pixels).save(path, "JPEG", quality=95, exif=exif, icc_profile=SRGB)
    return path


def _wait_status(page, text: str) -> None:
    page.wait_for_function(
        "t => document.getElementById('status').textContent.includes(t)", arg=text, timeout=30000
    )


def _canvas_mean(page) -> float:
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    return page.evaluate(
        """() => { const c = document.getElementById('view');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i+1] + d[i+2];
        return s / (d.length / 4 * 3); }"""
    )


def test_file_input_upload_and_a_local_strength_slider(page, tmp_path: Path) -> None:
    photo = _jpeg_with_metadata(tmp_path / "dusk.jpg", _dark())
    page.set_input_files("#file", str(photo))
    _wait_status(page, "1 photo: 1 done")
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    means = []
    for strength in ("0", "0.5", "1", "1.5", "2"):
        page.fill("#strength", strength)
        means.append(_canvas_mean(page))
    assert all(a < b for a, b in itertools.pairwise(means)), means
    # strength 0 shows the input, 1 doubles it (the light map is 0.5): within JPEG rounding
    assert abs(means[0] - _dark().mean()) < 2 and abs(means[2] - 2 * means[0]) < 2
    assert requests == []  # the slider never touches the network


def test_drop_upload_download_one_and_all(page, tmp_path: Path) -> None:
    first = _jpeg_with_metadata(tmp_path / "café ☀.jpg", _dark(seed=1))
    second = tmp_path / "b.png"
    Image.fromarray(_dark(90, 70, seed=2)).save(second)
    for path in (first, second):
        page.evaluate(
            """([name, bytes]) => { const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], name));
            document.getElementById('drop').dispatchEvent(
                new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})); }""",
            [path.name, list(path.read_bytes())],
        )
    _wait_status(page, "2 photos: 2 done")
    names = page.locator("#list .name").all_text_contents()
    assert names == ["café ☀.jpg", "b.png"]  # upload order
    page.locator("#list .thumb").first.click()
    page.fill("#strength", "0.5")
    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename == "café ☀_enhanced.jpg"
    saved = tmp_path / "one.jpg"
    download.save_as(saved)
    with Image.open(saved) as result:
        assert result.format == "JPEG" and result.size == (160, 120)
        assert result.getexif().get(0x010F) == "rave-test-camera"
        assert result.info.get("icc_profile") == SRGB
        brightness = np.asarray(result).mean()
    assert abs(brightness - _dark(seed=1).mean() * 2**0.5) < 3  # strength 0.5: I * 2**0.5
    with page.expect_download() as info:
        page.click("#zipall")
    bundle_path = tmp_path / "all.zip"
    info.value.save_as(bundle_path)
    with zipfile.ZipFile(bundle_path) as bundle:
        assert bundle.namelist() == ["café ☀_enhanced.jpg", "b_enhanced.png"]
        with Image.open(io.BytesIO(bundle.read("b_enhanced.png"))) as png:
            assert png.format == "PNG" and png.size == (70, 90)


def test_a_bad_file_shows_its_own_error_and_is_counted(page, tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a photo")
    good = _jpeg_with_metadata(tmp_path / "good.jpg", _dark())
    page.set_input_files("#file", [str(bad), str(good)])
    _wait_status(page, "2 photos: 1 done, 1 failed")
    states = page.locator("#list .state").all_text_contents()
    assert states[0].startswith("broken.jpg: ") and states[1].startswith("done")
    assert "failed" in page.locator("#list .thumb").first.get_attribute("class")


def test_tiff_and_sixteen_bit_png_get_visible_previews(page, tmp_path: Path) -> None:
    import cv2

    tiff = tmp_path / "scan.tif"
    Image.fromarray(_dark()).save(tiff, compression="tiff_deflate")
    deep = tmp_path / "deep.png"
    cv2.imwrite(str(deep), (_dark().astype(np.uint16) * 257)[:, :, ::-1])
    page.set_input_files("#file", [str(tiff), str(deep)])
    _wait_status(page, "2 photos: 2 done")
    for index in range(2):
        page.locator("#list .thumb").nth(index).click()
        page.fill("#strength", "0")
        assert abs(_canvas_mean(page) - _dark().mean()) < 1.5  # the photo, not a broken image


def test_keyboard_only(page, tmp_path: Path) -> None:
    photo = _jpeg_with_metadata(tmp_path / "k.jpg", _dark())
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "file"  # the chooser, labelled
    chooser = None
    for _ in range(3):  # headless Chromium now and then ignores a key right after loading
        try:
            with page.expect_file_chooser(timeout=3000) as opened:
                page.keyboard.press("Space")
            chooser = opened.value
            break
        except Exception:
            page.wait_for_timeout(300)
    assert chooser is not None, "Space on the focused file input opened no chooser"
    chooser.set_files(str(photo))
    _wait_status(page, "1 photo: 1 done")
    focused = []
    for _ in range(12):  # Tab through the controls
        page.keyboard.press("Tab")
        focused.append(
            page.evaluate("document.activeElement.id || document.activeElement.className")
        )
        if focused[-1] == "strength":
            break
    assert "strength" in focused, focused
    before = page.input_value("#strength")
    page.keyboard.press("ArrowRight")
    assert float(page.input_value("#strength")) > float(before)
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "download":
            break
    with page.expect_download() as info:
        page.keyboard.press("Enter")
    assert info.value.suggested_filename == "k_enhanced.jpg"


def test_narrow_screen_has_no_sideways_scroll(browser, site, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 667})
    page = context.new_page()
    page.goto(site + "/")
    page.set_input_files("#file", str(_jpeg_with_metadata(tmp_path / "n.jpg", _dark(400, 600))))
    _wait_status(page, "1 photo: 1 done")
    width = page.evaluate("document.scrollingElement.scrollWidth")
    view = page.locator("#view").bounding_box()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a photo")
    page.set_input_files("#file", str(bad))
    _wait_status(page, "2 photos: 1 done, 1 failed")
    # A failed photo's long error is cut to two lines in the list (shown whole when
    # selected), not a tall card: two lines of its 0.8rem text are under 2.5 lines of the
    # 0.85rem name above it, three are not.
    name, state = (
        page.locator(f"#list li:nth-child(2) {part}").bounding_box() for part in (".name", ".state")
    )
    page_text = page.text_content("#list li:nth-child(2) .state")
    context.close()
    assert width <= 375 and view is not None and view["width"] <= 375
    assert name is not None and state is not None
    assert state["height"] < 2.5 * name["height"], (state, name, page_text)


def test_disabled_download_links_save_nothing(page, tmp_path: Path) -> None:
    saved: list[str] = []
    page.on("download", lambda download: saved.append(download.suggested_filename))
    page.focus("#zipall")  # nothing is ready: Enter used to save the page as download.html
    page.keyboard.press("Enter")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a photo")
    page.set_input_files("#file", str(bad))
    _wait_status(page, "1 photo: 0 done, 1 failed")
    page.focus("#download")  # the failed photo's link
    page.keyboard.press("Enter")
    page.set_input_files("#file", str(_jpeg_with_metadata(tmp_path / "good.jpg", _dark())))
    _wait_status(page, "2 photos: 1 done, 1 failed")
    page.locator("#list .thumb").nth(1).click()
    with page.expect_download() as info:
        page.click("#download")
    info.value.path()  # finished
    assert saved == ["good_enhanced.jpg"]


def test_a_session_leaves_no_console_errors(browser, site, tmp_path: Path) -> None:
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda err: problems.append(str(err)))
    page.goto(site + "/")
    page.set_input_files("#file", str(_jpeg_with_metadata(tmp_path / "c.jpg", _dark())))
    _wait_status(page, "1 photo: 1 done")
    page.fill("#strength", "0.5")
    page.click("#zoom")
    page.wait_for_function("document.getElementById('zoom').getAttribute('aria-pressed') == 'true'")
    with page.expect_download() as info:
        page.click("#download")
    info.value.path()
    context.close()  # the favicon request, if any, has been answered by now
    assert problems == []


def test_a_starting_strength_over_two_is_kept_not_clamped(browser, light_half_net, tmp_path):
    httpd = make_server(light_half_net, "127.0.0.1", 0, strength=3, log_line=lambda line: None)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{httpd.server_port}/")
        assert page.text_content("#allvalue") == "3.00"  # rave serve --strength 3
        page.set_input_files("#file", str(_jpeg_with_metadata(tmp_path / "s.jpg", _dark())))
        _wait_status(page, "1 photo: 1 done")
        assert page.text_content("#value") == "3.00"
        assert page.get_attribute("#download", "href").endswith("strength=3")
    finally:
        context.close()
        httpd.stop()


def test_a_download_after_a_server_restart_enhances_the_photo_again(
    browser, light_half_net, tmp_path: Path
) -> None:
    def serve(port: int) -> Any:
        httpd = make_server(light_half_net, "127.0.0.1", port, log_line=lambda line: None)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        return httpd

    httpd = serve(0)
    port = httpd.server_port
    context = browser.new_context(accept_downloads=True)
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.set_input_files("#file", str(_jpeg_with_metadata(tmp_path / "r.jpg", _dark())))
        _wait_status(page, "1 photo: 1 done")
        httpd.stop()  # its results are gone with it
        httpd = serve(port)
        with page.expect_download() as info:  # used to fail in the download list: a 410
            page.click("#download")
        saved = tmp_path / "saved.jpg"
        info.value.save_as(saved)
        assert info.value.suggested_filename == "r_enhanced.jpg"
        with Image.open(saved) as result:
            assert result.format == "JPEG" and result.size == (160, 120)
        assert page.text_content("#list .state").startswith("done")
        with page.expect_download() as info:  # the zip, after another restart
            httpd.stop()
            httpd = serve(port)
            page.click("#zipall")
        info.value.save_as(tmp_path / "all.zip")
        with zipfile.ZipFile(tmp_path / "all.zip") as bundle:
            assert bundle.namelist() == ["r_enhanced.jpg"]
    finally:
        context.close()
        httpd.stop()


def _held_server(release: threading.Event, lines: list[str]) -> Any:
    """A serving server whose first photo stays "enhancing" until ``release`` is set."""
    net = EnhancementNet().eval()
    with torch.no_grad():  # light_half_net's: never a degenerate light map
        net.cond_add1.weight.zero_()
        net.cond_add1.bias.fill_(0.5)
    calls: list[int] = []

    def hold_the_first_photo(module: torch.nn.Module, args: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            release.wait(20)

    for module in net.modules():
        if not list(module.children()):
            module.register_forward_pre_hook(hold_the_first_photo)
    httpd = make_server(net, "127.0.0.1", 0, log_line=lines.append)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def test_remove_stops_the_photo_being_enhanced_and_the_next_one_starts(
    browser, tmp_path: Path
) -> None:
    release = threading.Event()
    lines: list[str] = []
    httpd = _held_server(release, lines)
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{httpd.server_port}/")
        first = _jpeg_with_metadata(tmp_path / "slow.jpg", _dark())
        second = _jpeg_with_metadata(tmp_path / "next.jpg", _dark(seed=3))
        page.set_input_files("#file", [str(first), str(second)])
        page.wait_for_function("() => document.querySelector('#list .state').textContent"
                               ".startsWith('enhancing')")  # fmt: skip
        page.click("#list li:first-child .remove", timeout=3000)
        assert page.locator("#list .name").all_text_contents() == ["next.jpg"]
        release.set()
        _wait_status(page, "1 photo: 1 done")
        stopped: list[str] = []
        for _ in range(100):  # its line is written as its thread ends: at most 10 s
            if stopped := [line for line in lines if "slow.jpg" in line]:
                break
            page.wait_for_timeout(100)
        assert stopped and "stopped" in stopped[0], stopped
        assert page.get_attribute("#list .remove", "aria-label") == "Remove next.jpg"
    finally:
        release.set()
        context.close()
        httpd.stop()


def test_a_photo_over_the_upload_limit_is_refused_without_sending_it(
    browser, light_half_net, tmp_path: Path
) -> None:
    httpd = make_server(
        light_half_net, "127.0.0.1", 0, max_upload_bytes=2**20, log_line=lambda line: None
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{httpd.server_port}/")
        posted: list[str] = []
        page.on("request", lambda request: posted.append(request.url))
        big = tmp_path / "big.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (700, 700, 3), dtype=np.uint8)).save(big)
        size = big.stat().st_size
        assert size > 2**20
        page.set_input_files("#file", str(big))
        _wait_status(page, "1 photo: 0 done, 1 failed")
        # the server's own words (a 413), but not a byte sent
        expected = f"big.png: {size:,} bytes is over the 1,048,576-byte (1 MB) upload limit"
        assert page.text_content("#list .state") == expected
        assert posted == []
    finally:
        context.close()
        httpd.stop()


def test_the_photo_is_an_image_with_a_name_for_screen_readers(page, tmp_path: Path) -> None:
    page.set_input_files("#file", str(_jpeg_with_metadata(tmp_path / "a11y.jpg", _dark())))
    _wait_status(page, "1 photo: 1 done")
    # a canvas without a role is left out of the accessibility tree, its aria-label unread
    assert page.get_by_role("img", name="Enhanced photo").count() == 1


def test_leaving_the_page_while_photos_are_being_enhanced_asks_first(
    browser, tmp_path: Path
) -> None:
    release = threading.Event()
    httpd = _held_server(release, [])
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{httpd.server_port}/")
        page.set_input_files("#file", str(_jpeg_with_metadata(tmp_path / "w.jpg", _dark())))
        page.wait_for_function("() => document.querySelector('#list .state').textContent"
                               ".startsWith('enhancing')")  # fmt: skip
        page.click("#allstrength")  # a page the user has not touched may not ask
        with page.expect_event("dialog", timeout=5000) as info:
            page.close(run_before_unload=True)  # a reload or closed tab lost the queue
        assert info.value.type == "beforeunload"
        info.value.dismiss()  # stay
        release.set()
        _wait_status(page, "1 photo: 1 done")
        page.close(run_before_unload=True)  # nothing in progress: no question
        page.wait_for_event("close", timeout=5000)
    finally:
        release.set()
        context.close()
        httpd.stop()


def test_removing_with_the_keyboard_keeps_the_focus_in_the_list(page, tmp_path: Path) -> None:
    photos = [_jpeg_with_metadata(tmp_path / f"{n}.jpg", _dark(seed=n)) for n in range(3)]
    page.set_input_files("#file", [str(path) for path in photos])
    _wait_status(page, "3 photos: 3 done")
    page.locator("#list .thumb").nth(2).click()  # another photo is selected
    page.focus("#list li:first-child .remove")
    page.keyboard.press("Enter")
    assert page.locator("#list .name").all_text_contents() == ["1.jpg", "2.jpg"]
    # on the photo that took its place, not lost to the page's start
    assert page.evaluate("document.activeElement.textContent").startswith("1.jpg")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")  # its remove button
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    assert page.locator("#list li").count() == 0
    assert page.evaluate("document.activeElement.id") == "file"  # the chooser
    assert page.is_visible("#empty")


def test_every_refusal_names_the_photo(page, tmp_path: Path) -> None:
    # What the server answers at its connection cap, before it knows which photo came
    page.route(
        "**/enhance?*",
        lambda route: route.fulfill(status=503, body="too many connections; try again shortly\n"),
    )
    page.set_input_files("#file", str(_jpeg_with_metadata(tmp_path / "named.jpg", _dark())))
    _wait_status(page, "1 photo: 0 done, 1 failed")
    assert page.text_content("#error") == "named.jpg: too many connections; try again shortly"


def test_removing_a_done_photo_removes_the_servers_copy(browser, light_half_net, tmp_path):
    httpd = make_server(light_half_net, "127.0.0.1", 0, log_line=lambda line: None)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{httpd.server_port}/")
        page.set_input_files("#file", str(_jpeg_with_metadata(tmp_path / "p.jpg", _dark())))
        _wait_status(page, "1 photo: 1 done")
        assert len(httpd.store) == 1
        with page.expect_response(
            lambda response: response.request.method == "DELETE", timeout=5000
        ) as info:
            page.click("#list .remove")
        assert info.value.status == 200
        assert len(httpd.store) == 0 and not [p for p in httpd.store._root.iterdir() if p.is_dir()]
    finally:
        context.close()
        httpd.stop()


def test_a_failed_photo_can_be_tried_again_without_choosing_it_again(page, tmp_path) -> None:
    page.route("**/enhance?*", lambda route: route.fulfill(status=503, body="busy\n"))
    page.set_input_files("#file", str(_jpeg_with_metadata(tmp_path / "again.jpg", _dark())))
    _wait_status(page, "1 photo: 0 done, 1 failed")
    page.unroute("**/enhance?*")  # the server is free again
    page.click("#retry", timeout=3000)
    _wait_status(page, "1 photo: 1 done")
    assert page.is_hidden("#retry") and page.text_content("#error") == ""


def test_a_starting_strength_is_kept_to_the_hundredth_and_keys_move_it(
    browser, light_half_net, tmp_path
):
    # Sliders in steps of 0.05 showed and downloaded rave serve --strength 1.33 as 1.35.
    httpd = make_server(light_half_net, "127.0.0.1", 0, strength=1.33, log_line=lambda line: None)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{httpd.server_port}/")
        assert page.text_content("#allvalue") == "1.33"
        assert page.input_value("#allstrength") == "1.33"
        page.set_input_files("#file", str(_jpeg_with_metadata(tmp_path / "s.jpg", _dark())))
        _wait_status(page, "1 photo: 1 done")
        assert page.text_content("#value") == "1.33" and page.input_value("#strength") == "1.33"
        assert page.get_attribute("#download", "href").endswith("strength=1.33")
        page.focus("#strength")
        page.keyboard.press("ArrowRight")  # one step: 0.01
        assert page.text_content("#value") == "1.34"
        assert page.get_attribute("#download", "href").endswith("strength=1.34")
        page.keyboard.press("PageUp")  # the browser's large step: a tenth of the range
        assert float(page.input_value("#strength")) >= 1.5
    finally:
        context.close()
        httpd.stop()


class _HeldAtAQuarter(Enhancer):
    """Reports 1 of 4 tiles done, then waits for ``release`` before computing the rest."""

    def __init__(self, net: torch.nn.Module, release: threading.Event) -> None:
        super().__init__(net)
        self.release = release

    def light_map(self, pixels: np.ndarray, *, deadline: Any = None, progress: Any = None):
        progress(1, 4)
        assert self.release.wait(30), "the test never released the photo"
        for done in (2, 3, 4):
            progress(done, 4)
        return super().light_map(pixels, deadline=deadline)


def test_the_photo_being_enhanced_shows_the_engines_progress(browser, light_half_net, tmp_path):
    release = threading.Event()
    engine = _HeldAtAQuarter(light_half_net, release)
    httpd = make_server(engine, "127.0.0.1", 0, log_line=lambda line: None)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{httpd.server_port}/")
        page.set_input_files("#file", str(_jpeg_with_metadata(tmp_path / "q.jpg", _dark())))
        page.wait_for_function(
            "() => /^enhancing… 25 %, [0-9]+ s$/"
            ".test(document.querySelector('#list .state').textContent)",
            timeout=30000,
        )
        bar = page.locator("#list progress")
        assert bar.get_attribute("role") == "progressbar"
        assert bar.get_attribute("aria-valuenow") == "25"
        assert bar.get_attribute("aria-label") == "q.jpg: progress"
        assert page.evaluate("() => document.querySelector('#list progress').value") == 25
        release.set()
        _wait_status(page, "1 photo: 1 done")
        assert page.text_content("#list .state").startswith("done, 160×120")
        assert bar.is_hidden()
    finally:
        release.set()
        context.close()
        httpd.stop()


class _RefusesToRender(Enhancer):
    """Enhances uploads as usual, but every full-size render runs over the time limit."""

    def enhance_file(self, *args: Any, **kwargs: Any) -> Any:
        from rave.inference.tiled import DeadlineExceeded

        raise DeadlineExceeded("over the time limit")


def test_a_download_the_server_refuses_says_why_on_the_page(browser, light_half_net, tmp_path):
    # A 503 at download time (busy, time limit) used to fail in the download list only.
    httpd = make_server(_RefusesToRender(light_half_net), "127.0.0.1", 0, log_line=lambda x: None)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    context = browser.new_context(accept_downloads=True)
    try:
        page = context.new_page()
        downloads: list[Any] = []
        page.on("download", lambda download: downloads.append(download))
        page.goto(f"http://127.0.0.1:{httpd.server_port}/")
        page.set_input_files("#file", str(_jpeg_with_metadata(tmp_path / "late.jpg", _dark())))
        _wait_status(page, "1 photo: 1 done")
        reason = "late.jpg: over the 600 s time limit per photo (rave serve --time-limit)"
        page.focus("#download")
        page.keyboard.press("Enter")
        _wait_status(page, "Not downloaded:")
        assert page.text_content("#status") == f"Not downloaded: {reason}"
        assert page.evaluate("document.activeElement.id") == "download"  # the focus stays
        page.fill("#strength", "0.5")  # the status line is the photos' count again
        _wait_status(page, "1 photo: 1 done")
        page.click("#zipall")
        _wait_status(page, "Not downloaded:")
        assert page.text_content("#status") == f"Not downloaded: {reason}"
        assert downloads == [] and page.locator("iframe").count() == 0
    finally:
        context.close()
        httpd.stop()
