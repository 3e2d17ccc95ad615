"""The dashboard in a real browser: Debian's chromium, driven by Playwright, from file:// with no server.

Skipped when chromium (``/usr/bin/chromium``, or ``$CHROMIUM``) or the ``playwright`` package is
missing. To run it: ``apt-get install -y chromium`` and ``pip install playwright`` (no
``playwright install``: the system chromium is used).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from vis_steer_lens.dashboard import export_dashboard

from .conftest import CONTROL_ONLY, D_SAE, DEAD, DISAGREE, FLAGGED

SCREENSHOT_COPY = Path("/tmp/dashboard_screenshot.png")


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


# Pixels of a feature page's overlay canvases: (alpha at the centre of the map's strongest patch,
# alpha at the centre of an inactive patch, RGBA there, any pixel drawn at all), per canvas.
CANVAS_PROBE = """(canvases, imageId) => canvases.map(c => {
  const map = window.__maps[c.dataset.imageId];
  const h = map.length, w = map[0].length, ctx = c.getContext('2d');
  let best = [0, 0], off = null;
  for (let r = 0; r < h; r++) for (let q = 0; q < w; q++) {
    if (map[r][q] > map[best[0]][best[1]]) best = [r, q];
    if (!(map[r][q] > 0) && off === null) off = [r, q];
  }
  const at = ([r, q]) => Array.from(ctx.getImageData(Math.floor((q + 0.5) * c.width / w), Math.floor((r + 0.5) * c.height / h), 1, 1).data);
  const all = ctx.getImageData(0, 0, c.width, c.height).data;
  let drawn = false; for (let i = 3; i < all.length; i += 4) if (all[i] > 0) { drawn = true; break; }
  return {style: c.dataset.style, peak: at(best)[3], off: off ? at(off) : null, drawn};
})"""


def _probe(page, selector):
    page.wait_for_function(
        f"[...document.querySelectorAll({json.dumps(selector)})].every(c => c.dataset.ready === '1')"
    )
    page.evaluate(
        "() => { window.__maps = {}; const d = Object.values(window.VSL_FEATURES)"
        ".find(f => f.feature === parseInt(location.hash.slice(1))); for (const t of [...d.top, ...(d.quantiles || [])]) window.__maps[t.image_id] = t.map; }"
    )
    return page.locator(selector).evaluate_all(CANVAS_PROBE)


def test_feature_page_images_and_explanations(page, dashboard, tmp_path):
    page.goto(dashboard.as_uri())
    page.wait_for_function("window.VSL_READY === true")
    page.locator("#rows tr[data-feature='0'] a").first.click()
    page.wait_for_function("window.VSL_READY === true && location.hash === '#0'")
    assert page.locator("#title").inner_text() == "Feature 0"
    page.wait_for_function("[...document.querySelectorAll('#images img')].every(i => i.complete)")
    widths = page.locator("#images img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert widths and all(w > 0 for w in widths)
    # The images are the originals; the map is drawn over them. Outlines leave the strongest
    # patch's own colours untouched (transparent there) and draw something around it.
    sources = page.locator("#images img").evaluate_all("imgs => imgs.map(i => i.getAttribute('src'))")
    assert all(src.startswith("images/") and "heat" not in src for src in sources), sources
    probes = _probe(page, "#images canvas")
    assert probes and all(p["style"] == "outline" and p["peak"] == 0 and p["drawn"] for p in probes), probes
    page.select_option("#overlay-style", "translucent")
    probes = _probe(page, "#images canvas")
    # One scale per feature: the best image's strongest patch is clear, weaker ones lightly shaded,
    # inactive patches darkest.
    assert all(p["style"] == "translucent" for p in probes) and probes[0]["peak"] == 0, probes
    assert all(p["off"] is None or p["peak"] < p["off"][3] for p in probes), probes
    assert any(p["off"] is not None and p["off"][3] > 0 for p in probes), probes
    page.locator("#show-overlay").uncheck()  # the toggle: nothing drawn over any image
    assert all(not p["drawn"] and p["style"] == "off" for p in _probe(page, "#images canvas"))
    page.locator("#show-overlay").check()
    # Top-k's images as it saw them: inactive patches painted the mask's grey.
    masked = _probe(page, ".shown-images[data-method='topk'] canvas")
    assert masked and all(p["style"] == "masked" and p["peak"] == 0 for p in masked), masked
    assert any(p["off"] == [128, 128, 128, 255] for p in masked), masked
    explanations = page.locator("#explanations").inner_text()
    for text in ("steering says red circle 0", "topk says red circle 0", "hybrid says red circle 0"):
        assert text in explanations
    assert "The image shows a steering says" in page.locator("#answers").inner_text()
    bins = len(
        page.evaluate("Object.values(window.VSL_FEATURES).find(f => f.feature === 0).histogram.counts")
    )
    assert page.locator("#histogram rect.bar").count() == bins > 0
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
    # A feature not in the dashboard is said so, without fetching a data file that is not there.
    assert page.errors == []


class _Decoder:
    """Stands in for an SAE: only its decoder is read."""

    W_dec = torch.nn.functional.normalize(
        torch.randn(D_SAE, 32, generator=torch.Generator().manual_seed(0)), dim=-1
    )


@pytest.fixture(scope="module")
def triage_dashboard(triage_results_dir, tmp_path_factory):
    return export_dashboard(triage_results_dir, tmp_path_factory.mktemp("triage-dashboard"), sae=_Decoder())


def _ids(page) -> list[int]:
    return [int(x) for x in page.locator("#rows tr").evaluate_all("rs => rs.map(r => r.dataset.feature)")]


def test_index_triage(page, triage_dashboard):
    page.goto(triage_dashboard.as_uri())
    page.wait_for_function("window.VSL_READY === true")
    live = [f for f in range(D_SAE) if f != DEAD]
    assert _ids(page) == live  # the dead feature is hidden by default
    assert page.locator("#count").inner_text() == f"{len(live)} of {D_SAE} features"
    page.locator("#show-dead").check()
    assert _ids(page) == list(range(D_SAE))
    page.locator("#show-dead").uncheck()

    page.locator("#only-clear").check()  # the ground truth's clear features: the even ones
    assert _ids(page) == [f for f in live if f % 2 == 0]
    page.locator("#only-clear").uncheck()
    page.select_option("#flag-filter", "flagged")
    assert _ids(page) == [FLAGGED]
    page.select_option("#flag-filter", "unflagged")
    assert FLAGGED not in _ids(page) and len(_ids(page)) == len(live) - 1
    page.select_option("#flag-filter", "all")
    page.select_option("#agreement-filter", "-0.25")  # methods disagree
    assert _ids(page) == [DISAGREE]
    page.select_option("#agreement-filter", "0.5")
    assert DISAGREE not in _ids(page) and len(_ids(page)) == len(live) - 1
    page.select_option("#agreement-filter", "any")

    # Sorting by Top-k's AUROC: its flagged answer (the highest AUROC) is left out, and said so.
    page.locator("#header th[data-column='auroc:topk']").click()
    assert FLAGGED not in _ids(page) and len(_ids(page)) == len(live) - 1
    assert "1 answers flagged by topk" in page.locator("#hidden-note").inner_text()
    page.locator("#header th[data-column='auroc:steering']").click()
    assert FLAGGED in _ids(page) and page.locator("#hidden-note").inner_text() == ""

    # Search: the controls' answers only when asked for.
    page.fill("#search", "cyan")
    assert _ids(page) == []
    page.locator("#search-cols input[data-key='explanation:steering (random direction)']").check()
    assert _ids(page) == [CONTROL_ONLY]
    page.fill("#search", "")

    summary = page.locator("#summary-methods").inner_text()
    assert "steering (random direction) (control)" in summary and "0.710 [0.600, 0.800]" in summary
    topk = page.locator("#summary-methods tr", has_text="topk").inner_text().split("\t")
    assert topk[1:3] == [str(D_SAE), "1"]  # explained, flagged
    page.locator("#summary summary").click()  # the margins are folded at first
    assert "0.190 [0.100, 0.300]" in page.locator("#summary-margins").inner_text()


def test_feature_page_sweep_answers_nearest_prompts(page, triage_dashboard):
    page.goto(triage_dashboard.parent.joinpath("feature.html").as_uri() + "#0")
    page.wait_for_function("window.VSL_READY === true")
    sweep = page.locator("#sweep-answers tbody tr").evaluate_all(
        "rs => rs.map(r => [...r.children].map(c => c.textContent))"
    )
    assert [r[2] for r in sweep] == ["blank", "circle", "circle circle circle"]  # feature 0 was sampled first
    assert [r[3] for r in sweep] == ["", "chosen", ""]
    unit = _Decoder.W_dec
    cos = unit @ unit[0]
    cos[0] = -2
    expected = cos.argsort(descending=True)[:7].tolist()
    links = page.locator("#nearest a").evaluate_all(
        "as => as.map(a => parseInt(a.getAttribute('href').slice(1)))"
    )
    assert links == expected
    assert page.locator("#prompts details").count() >= 1
    page.locator("#nearest a").first.click()
    page.wait_for_function(f"window.VSL_READY === true && location.hash === '#{expected[0]}'")
    page.goto(triage_dashboard.parent.joinpath("feature.html").as_uri() + f"#{DEAD}")
    page.wait_for_function("window.VSL_READY === true")
    assert "(dead)" in page.locator("#title").inner_text()
    assert not page.locator("#sweep-answers-section").is_visible()
