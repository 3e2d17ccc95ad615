"""The demo's own dashboard in a browser, as a new user meets it: live features first, the
filters, sorting by AUROC without flagged answers, and a feature page with its overlay and
nearest features. Uses the session's one demo run (slow)."""

from __future__ import annotations

import json

import pytest

from .test_dashboard_browser import _probe

pytestmark = pytest.mark.slow


def _index(demo_run):
    text = (demo_run / "dashboard" / "data" / "index.js").read_text()
    data = json.loads(text[text.index("=") + 1 :].strip().rstrip(";"))
    col = {c: i for i, c in enumerate(data["columns"])}
    return data, col, {row[col["feature"]]: row for row in data["rows"]}


def _ids(page) -> list[int]:
    return [int(x) for x in page.locator("#rows tr").evaluate_all("rs => rs.map(r => r.dataset.feature)")]


def test_demo_index_triage(page, demo_run):
    data, col, rows = _index(demo_run)
    live = [f for f, r in rows.items() if r[col["live"]]]
    assert 0 < len(live) < len(rows)  # the demo's SAE has dead features
    page.goto((demo_run / "dashboard" / "index.html").as_uri())
    page.wait_for_function("window.VSL_READY === true")
    first = _ids(page)
    assert first and all(rows[f][col["live"]] for f in first)  # no dead feature on the first page
    assert page.locator("#count").inner_text() == f"{len(live)} of {len(rows)} features"

    page.locator("#only-clear").check()
    clear = [f for f in live if rows[f][col["clear"]] is True]
    assert page.locator("#count").inner_text() == f"{len(clear)} of {len(rows)} features"
    assert all(rows[f][col["clear"]] is True for f in _ids(page))
    page.locator("#only-clear").uncheck()
    page.select_option("#flag-filter", "flagged")
    assert all(rows[f][col["flagged"]] > 0 for f in _ids(page))
    page.select_option("#flag-filter", "all")

    page.locator("#header th[data-column='auroc:steering']").click()
    ranked = _ids(page)
    assert all(rows[f][col["flag:steering"]] is None for f in ranked)  # flagged answers left out
    aurocs = [rows[f][col["auroc:steering"]] for f in ranked if rows[f][col["auroc:steering"]] is not None]
    assert aurocs == sorted(aurocs, reverse=True)
    flagged = sum(1 for f in live if rows[f][col["flag:steering"]] not in (None, "dead"))
    if flagged:
        assert f"{flagged} answers flagged by steering" in page.locator("#hidden-note").inner_text()
    assert "steering (random direction)" in page.locator("#summary-methods").inner_text()
    assert page.locator("#summary-margins tr").count() > 1


def test_demo_feature_page(page, demo_run):
    data, col, rows = _index(demo_run)
    feature = max((f for f, r in rows.items() if r[col["live"]]), key=lambda f: rows[f][col["max_act"]])
    page.goto((demo_run / "dashboard" / "feature.html").as_uri() + f"#{feature}")
    page.wait_for_function("window.VSL_READY === true")
    probes = _probe(page, "#images canvas")
    assert probes and all(p["style"] == "outline" and p["peak"] == 0 and p["drawn"] for p in probes), probes
    assert page.locator("#nearest li").count() > 0  # the demo passes its SAE
    assert page.locator("#text-side li").count() == 10  # and its model: the direction's top tokens
    quantiles = _probe(page, "#quantiles canvas")  # images below the top, drawn the same way
    assert len(quantiles) == 3 and all(p["peak"] == 0 for p in quantiles), quantiles
    captions = page.locator("#quantiles figcaption").all_inner_texts()
    assert [c.split(" · ")[0] for c in captions] == ["quantile 0.25", "quantile 0.5", "quantile 0.75"]
    assert page.locator("#explanations tbody tr").count() >= 3
    assert page.locator("#prompts details").count() >= 1
    # The scorer's evidence: images generated from each method's explanation, with their peaks.
    evidence = page.locator("#evidence figure")
    assert evidence.count() >= 3
    bands = page.evaluate(
        "() => [...document.querySelectorAll('#evidence .evidence-band')].map(b => [b.offsetWidth, b.offsetHeight,"
        " getComputedStyle(b).backgroundImage, getComputedStyle(b).backgroundPositionY])"
    )
    assert len(bands) == evidence.count() and all(w >= 64 and h >= 64 for w, h, _, _ in bands), bands
    assert len({image for _, _, image, _ in bands}) == 1  # one sheet per feature, a band per method
    assert len({y for _, _, _, y in bands}) == len(bands)
    caption = page.locator("#evidence figcaption").first.inner_text()
    assert " · peak " in caption and caption.count(",") >= 2  # three images, three activations
