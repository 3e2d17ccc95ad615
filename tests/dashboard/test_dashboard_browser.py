"""The dashboard in a real browser: Debian's chromium, driven by Playwright, from file:// with no server.

Skipped when chromium (``/usr/bin/chromium``, or ``$CHROMIUM``) or the ``playwright`` package is
missing. To run it: ``apt-get install -y chromium`` and ``pip install playwright`` (no
``playwright install``: the system chromium is used).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vis_steer_lens.dashboard import export_dashboard

from .conftest import D_SAE

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SCREENSHOT_COPY = Path("/tmp/dashboard_screenshot.png")


@pytest.fixture(scope="module")
def browser():
    # CI sets VSL_REQUIRE_BROWSER so that a missing browser fails there instead of skipping.
    missing = pytest.fail if os.environ.get("VSL_REQUIRE_BROWSER") else pytest.skip
    if not Path(CHROMIUM).is_file():
        missing(f"No chromium at {CHROMIUM} (apt-get install -y chromium, or set CHROMIUM=path).")
    try:
        from playwright import sync_api
    except ImportError:
        missing("pip install playwright to run browser tests")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A page that records every console error and uncaught exception; the test fails on any."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on(
        "console",
        lambda msg: errors.append(f"console.{msg.type}: {msg.text}") if msg.type == "error" else None,
    )
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("requestfailed", lambda req: errors.append(f"request failed: {req.url}"))
    # No network: any http(s) request is a bug (a CDN, a font) and is refused.
    page.route(
        "http*://**", lambda route: (errors.append(f"network request: {route.request.url}"), route.abort())
    )
    page.errors = errors
    yield page
    context.close()
    assert errors == [], errors


@pytest.fixture(scope="module")
def dashboard(results_dir, tmp_path_factory):
    return export_dashboard(results_dir, tmp_path_factory.mktemp("dashboard"))


def test_index_table_search_and_sort(page, dashboard):
    page.goto(dashboard.as_uri())
    page.wait_for_function("window.VSL_READY === true")
    rows = page.locator("#rows tr")
    assert rows.count() == D_SAE
    assert page.locator("#count").inner_text() == f"{D_SAE} of {D_SAE} features"
    assert "topk says" in page.locator("#features").inner_text()

    page.fill("#search", "blue square")  # odd features only
    assert page.locator("#count").inner_text() == f"{D_SAE // 2} of {D_SAE} features"
    assert [int(x) for x in rows.evaluate_all("rs => rs.map(r => r.dataset.feature)")] == [1, 3, 5, 7]
    page.fill("#search", "")

    page.locator("#header th", has_text="feature").first.click()  # ascending, then descending
    page.locator("#header th", has_text="feature").first.click()
    ids = [int(x) for x in rows.evaluate_all("rs => rs.map(r => r.dataset.feature)")]
    assert ids == sorted(range(D_SAE), reverse=True)
    thumbs = page.locator("#rows img.thumb")
    if thumbs.count():
        thumbs.first.scroll_into_view_if_needed()
        page.wait_for_function(
            "[...document.querySelectorAll('#rows img.thumb')].slice(0, 1).every(i => i.complete)"
        )


def test_feature_page_images_and_explanations(page, dashboard, tmp_path):
    page.goto(dashboard.as_uri())
    page.wait_for_function("window.VSL_READY === true")
    page.locator("#rows tr[data-feature='0'] a").first.click()
    page.wait_for_function("window.VSL_READY === true && location.hash === '#0'")
    assert page.locator("#title").inner_text() == "Feature 0"
    page.wait_for_function("[...document.querySelectorAll('#images img')].every(i => i.complete)")
    widths = page.locator("#images img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert widths and all(w > 0 for w in widths)
    # The heatmap toggle swaps every top image for the original and back.
    sources = "imgs => imgs.map(i => i.getAttribute('src'))"
    assert all("images/heat/" in src for src in page.locator("#images img").evaluate_all(sources))
    page.locator("#show-heatmap").uncheck()
    originals = page.locator("#images img").evaluate_all(sources)
    assert all(src.startswith("images/img-") for src in originals), originals
    page.wait_for_function(
        "[...document.querySelectorAll('#images img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    page.locator("#show-heatmap").check()
    assert all("images/heat/" in src for src in page.locator("#images img").evaluate_all(sources))
    explanations = page.locator("#explanations").inner_text()
    for text in ("steering says red circle 0", "topk says red circle 0", "hybrid says red circle 0"):
        assert text in explanations
    assert "The image shows a steering says" in page.locator("#answers").inner_text()
    assert page.locator("#histogram .main-svg").count() > 0  # plotly drew the histogram
    assert "yes" in page.locator("#sweep").inner_text()
    assert not page.locator("#prev").is_visible()  # feature 0 is the first
    page.locator("#next").click()
    page.wait_for_function("window.VSL_READY === true && document.title.startsWith('Feature 1 ')")
    page.goto(dashboard.parent.joinpath("feature.html").as_uri() + "#0")
    page.wait_for_function("window.VSL_READY === true")
    page.wait_for_function("[...document.querySelectorAll('#images img')].every(i => i.complete)")
    shot = tmp_path / "feature-0.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 0
    try:
        shutil.copyfile(shot, SCREENSHOT_COPY)
    except OSError:
        pass  # a convenience copy only

    page.goto(dashboard.parent.joinpath("feature.html").as_uri() + f"#{D_SAE + 5}")
    page.wait_for_function("document.getElementById('title').textContent.includes('not in this dashboard')")
    # The missing feature's script fails to load: that must be seen as an error (so the error capture
    # works), and is the expected outcome here.
    assert any("features/" in e or "ERR_FILE_NOT_FOUND" in e for e in page.errors), page.errors
    page.errors.clear()
