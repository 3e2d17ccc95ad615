"""A static HTML dashboard of a results folder: works from ``file://``, with no server and no network.

Layout of ``out_dir``::

    index.html              feature table: sortable, searchable, paginated (data from data/index.js)
    feature.html            one viewer for every feature: feature.html#F loads data/features/F.js
    assets/plotly.min.js    plotly, copied from the installed package (no CDN)
    data/index.js           window.VSL_INDEX = {...}: one compact row per feature
    data/common.js          window.VSL_COMMON = {...}: run metadata, feature ids, coefficient sweep
    data/features/F.js      window.VSL_FEATURE = {...}: top images, explanations, answers, histogram
    images/img-ID.png       each top image once
    images/heat/F-S.png     slot S of feature F with its patch heatmap

Data files are scripts assigning a global rather than JSON, because browsers refuse ``fetch`` on
``file://`` but do run ``<script src>``. The index holds only text and numbers (images are files,
loaded lazily for the visible page), so thousands of features stay a few megabytes.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vis_steer_lens.atomic import atomic_path, atomic_write_text
from vis_steer_lens.dashboard.results import DashboardResults
from vis_steer_lens.display import heatmap_overlay

ROWS_PER_PAGE = 100
#: Columns of each index row, in order (per-method columns follow: explanation, auroc_mean).
INDEX_COLUMNS = ["feature", "frac_nonzero", "frac_images", "max_act", "concept", "thumb"]


def _js(name: str, payload: Any) -> str:
    # allow_nan=False: a NaN would be invalid JSON/JS literal in some engines and silently break a page.
    return f"window.{name} = {json.dumps(payload, allow_nan=False, separators=(',', ':'))};\n"


def _num(value: Any, digits: int = 6) -> float | None:
    """``value`` to ``digits`` significant digits (so tiny firing frequencies survive); NaN → ``None``."""
    if value is None:
        return None
    value = float(value)
    if value != value or abs(value) == float("inf"):
        return None
    return float(f"{value:.{digits}g}")


def _plotly_js() -> str:
    """The plotly.js bundle of the installed ``plotly`` Python package."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _save_png(image: Image.Image, path: Path) -> None:
    # Low compression: these are small images and export time matters for thousands of features.
    with atomic_path(path, sync=False) as tmp:
        image.save(tmp, format="PNG", compress_level=1)


def _sweep_records(sweep) -> list[dict[str, Any]]:
    if sweep is None:
        return []
    keep = [
        c
        for c in (
            "multiple",
            "coefficient",
            "changed_fraction",
            "distinct_fraction",
            "degenerate_fraction",
            "score",
            "chosen",
        )
        if c in sweep
    ]
    records = []
    for row in sweep[keep].to_dict("records"):
        records.append({k: (bool(v) if k == "chosen" else _num(v)) for k, v in row.items()})
    return records


def export_dashboard(results_dir: str | Path, out_dir: str | Path, *, exclude_flagged: bool = False) -> Path:
    """Write the static dashboard of a results folder.

    Features that fired come first in the index, in mining order; those that never fired follow.

    Args:
        results_dir: A results folder with ``mined/`` and optionally ``explanations.parquet``,
            ``scores.csv``, ``feature_concepts.csv`` and ``coefficient_sweep.csv`` (the demo's output).
        out_dir: Output folder (created; existing dashboard files are overwritten).
        exclude_flagged: Leave out answers flagged as repetitions, unfinished or empty.

    Returns:
        The path of ``index.html``; open it in a browser (``file://`` works).

    Raises:
        FileNotFoundError: ``results_dir`` has no ``mined/`` results.
    """
    results = DashboardResults.load(results_dir)
    mined = results.mined
    out = Path(out_dir)
    for sub in ("assets", "data/features", "images/heat"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "assets" / "plotly.min.js", _plotly_js())

    methods = results.method_labels
    explanations = results.explanation_records(exclude_flagged=exclude_flagged)
    concepts = results.concept_records()
    # Without mining (a run with explanations only) the statistics are blank and no image is shown.
    stats = mined.stats.set_index("feature") if mined is not None else None
    patch_size = mined.patch_size if mined is not None else None
    no_stat = {c: None for c in ("frac_nonzero", "frac_images", "max_act", "mean_act", "mean_nonzero_act")}

    @lru_cache(maxsize=512)
    def source_image(image_id: int) -> Image.Image:
        image = results.image(image_id)
        path = out / "images" / f"img-{image_id}.png"
        if not path.exists():
            _save_png(image, path)
        return image

    rows = []
    fired = [f for f in results.features if stats is None or stats.loc[f, "frac_images"] > 0]
    never = [f for f in results.features if stats is not None and stats.loc[f, "frac_images"] <= 0]
    for feature in fired + never:  # dead features last: they have nothing to show
        stat = stats.loc[feature] if stats is not None else no_stat
        max_act = float(stat["max_act"]) if stats is not None else None
        top = []
        for slot, (image_id, score, amap) in enumerate(results.top_images(feature)):
            heat = f"images/heat/{feature}-{slot}.png"
            # One scale per feature (its max activation), so its images compare to each other.
            overlay = heatmap_overlay(source_image(image_id), amap, patch_size, max_value=max_act or None)
            _save_png(overlay, out / heat)
            top.append(
                {
                    "image_id": int(image_id),
                    "score": _num(score, 4),
                    "heatmap": heat,
                    "image": f"images/img-{image_id}.png",
                    "map": [[_num(v, 3) for v in r] for r in amap.tolist()],
                }
            )
        edges, counts = mined.histogram(feature) if mined is not None else (torch.zeros(0), torch.zeros(0))
        feature_explanations = explanations.get(feature, [])
        by_method = {e["method_label"]: e for e in feature_explanations}
        concept = concepts.get(feature)
        concept_text = None
        if concept is not None:
            concept_text = concept.get("best_object_concept") or concept.get("best_concept")
        payload = {
            "feature": int(feature),
            "sae_id": results.sae_id,
            "stats": {
                "frac_nonzero": _num(stat["frac_nonzero"]),
                "frac_images": _num(stat["frac_images"]),
                "max_act": _num(max_act),
                "mean_act": _num(stat["mean_act"]),
                "mean_nonzero_act": _num(stat["mean_nonzero_act"]),
            },
            "top": top,
            "explanations": feature_explanations,
            "concept": concept,
            "histogram": {
                "centres": [_num(v, 5) for v in ((edges[:-1] + edges[1:]) / 2).tolist()],
                "width": _num(float(edges[1] - edges[0]), 6) if len(edges) > 1 else 0,
                "counts": [int(c) for c in counts.tolist()],
            },
        }
        atomic_write_text(
            out / "data" / "features" / f"{feature}.js", _js("VSL_FEATURE", payload), sync=False
        )
        row = [
            int(feature),
            _num(stat["frac_nonzero"]),
            _num(stat["frac_images"]),
            _num(max_act),
            concept_text,
            top[0]["heatmap"] if top else None,
        ]
        for method in methods:
            e = by_method.get(method, {})
            row += [e.get("explanation"), _num(e.get("auroc_mean"), 4)]
        rows.append(row)

    columns = INDEX_COLUMNS + [f"{kind}:{m}" for m in methods for kind in ("explanation", "auroc")]
    meta = {
        "sae_id": results.sae_id,
        "hook_name": mined.hook_name if mined is not None else None,
        "model_name": mined.meta.get("model_name") if mined is not None else None,
        "d_sae": mined.d_sae if mined is not None else None,
        "n_features": len(rows),
        # read and mined (skipped unreadable ones excluded)
        "images_processed": mined.images_mined if mined is not None else 0,
        "grid_size": mined.grid_size if mined is not None else None,
        "methods": methods,
        "has_scores": results.scores is not None,
        "has_concepts": results.concepts is not None,
        "rows_per_page": ROWS_PER_PAGE,
    }
    atomic_write_text(
        out / "data" / "index.js", _js("VSL_INDEX", {"meta": meta, "columns": columns, "rows": rows})
    )
    atomic_write_text(
        out / "data" / "common.js",
        _js(
            "VSL_COMMON", {"meta": meta, "features": results.features, "sweep": _sweep_records(results.sweep)}
        ),
    )
    atomic_write_text(out / "feature.html", _page("Feature", _FEATURE_BODY, _FEATURE_JS))
    index = out / "index.html"
    atomic_write_text(index, _page("Features", _INDEX_BODY, _INDEX_JS))
    return index


def _page(title: str, body: str, script: str) -> str:
    return (
        _HTML.replace("__TITLE__", title)
        .replace("__CSS__", _CSS)
        .replace("__BODY__", body)
        .replace("__SCRIPT__", script)
    )


_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__ · vis_steer_lens</title>
<link rel="icon" href="data:,">
<style>__CSS__</style>
</head>
<body>
__BODY__
<script>
__SCRIPT__
</script>
</body>
</html>
"""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .3em; } h2 { font-size: 1.1em; margin-top: 1.4em; }
.meta { color: #666; font-size: .9em; margin-bottom: 1em; }
table { border-collapse: collapse; width: 100%; font-size: .88em; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 6px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; cursor: pointer; user-select: none; position: sticky; top: 0; }
th.sorted-asc::after { content: " \\25B2"; } th.sorted-desc::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:hover td { background: #fafafa; }
img.thumb { width: 48px; height: 48px; image-rendering: pixelated; }
.controls { display: flex; gap: 1em; align-items: center; margin-bottom: .6em; }
#search { width: 22em; padding: 4px; }
.images { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; text-align: center; font-size: .8em; color: #555; }
figure img { width: 160px; height: 160px; image-rendering: pixelated; border: 1px solid #ccc; }
.answer { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: .85em; }
.muted { color: #999; }
"""

_INDEX_BODY = """
<h1>SAE features</h1>
<div class="meta" id="meta"></div>
<div class="controls">
  <input id="search" type="search" placeholder="Search feature id, explanation, concept">
  <button id="prev">&larr; Prev</button><span id="page"></span><button id="next">Next &rarr;</button>
  <span id="count" class="muted"></span>
</div>
<table id="features"><thead><tr id="header"></tr></thead><tbody id="rows"></tbody></table>
<script src="data/index.js"></script>
"""

_INDEX_JS = r"""
(function () {
  const data = window.VSL_INDEX;
  if (!data) { document.getElementById('meta').textContent = 'data/index.js is missing.'; return; }
  const meta = data.meta, cols = data.columns, perPage = meta.rows_per_page;
  const col = Object.fromEntries(cols.map((c, i) => [c, i]));
  // Displayed columns: [header, column index, kind]
  const shown = [['feature', col.feature, 'id'], ['top image', col.thumb, 'img'],
                 ['firing freq (patches)', col.frac_nonzero, 'num'],
                 ['firing freq (images)', col.frac_images, 'num'], ['max act', col.max_act, 'num']];
  if (meta.has_concepts) shown.push(['ground-truth concept', col.concept, 'text']);
  for (const m of meta.methods) {
    shown.push(['explanation: ' + m, col['explanation:' + m], 'text']);
    if (meta.has_scores) shown.push(['AUROC: ' + m, col['auroc:' + m], 'num']);
  }
  document.getElementById('meta').textContent = meta.sae_id + ' · ' + meta.hook_name + ' · ' +
    meta.n_features + ' features · ' + meta.images_processed + ' images mined';
  // Search text per row, built once.
  const haystack = data.rows.map(r => cols.map((c, i) => c === 'thumb' ? '' : (r[i] ?? '')).join(' \u0001 ').toLowerCase());
  let order = data.rows.map((_, i) => i), filtered = order, page = 0, sortCol = null, sortDir = 1;

  const header = document.getElementById('header');
  shown.forEach(([name, index, kind]) => {
    const th = document.createElement('th');
    th.textContent = name;
    if (kind !== 'img') th.addEventListener('click', () => sortBy(index, th));
    header.appendChild(th);
  });

  function sortBy(index, th) {
    sortDir = (sortCol === index) ? -sortDir : (typeof data.rows[0]?.[index] === 'number' && index !== col.feature ? -1 : 1);
    sortCol = index;
    header.querySelectorAll('th').forEach(h => h.classList.remove('sorted-asc', 'sorted-desc'));
    th.classList.add(sortDir > 0 ? 'sorted-asc' : 'sorted-desc');
    order.sort((a, b) => {
      const x = data.rows[a][index], y = data.rows[b][index];
      if (x === y) return a - b;
      if (x === null || x === undefined) return 1;   // missing values last, either direction
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sortDir;
    });
    applyFilter(false);
  }

  function applyFilter(resetPage = true) {
    const q = document.getElementById('search').value.trim().toLowerCase();
    filtered = q ? order.filter(i => haystack[i].includes(q)) : order.slice();
    if (resetPage) page = 0;
    render();
  }

  function cell(value, kind, row) {
    const td = document.createElement('td');
    if (kind === 'id') {
      const a = document.createElement('a');
      a.href = 'feature.html#' + value; a.textContent = value; td.appendChild(a);
    } else if (kind === 'img') {
      if (value) {
        const a = document.createElement('a'); a.href = 'feature.html#' + row[col.feature];
        const img = document.createElement('img');
        img.className = 'thumb'; img.loading = 'lazy'; img.src = value; img.alt = 'top image';
        a.appendChild(img); td.appendChild(a);
      }
    } else if (kind === 'num') {
      td.className = 'num';
      td.textContent = (value === null || value === undefined) ? '–' : Number(value).toPrecision(3);
    } else {
      td.textContent = value ?? '';
      if (value === null || value === undefined) { td.textContent = '–'; td.className = 'muted'; }
    }
    return td;
  }

  function render() {
    const pages = Math.max(1, Math.ceil(filtered.length / perPage));
    page = Math.min(page, pages - 1);
    const body = document.createElement('tbody'); body.id = 'rows';
    for (const i of filtered.slice(page * perPage, (page + 1) * perPage)) {
      const r = data.rows[i], tr = document.createElement('tr');
      tr.dataset.feature = r[col.feature];
      shown.forEach(([, index, kind]) => tr.appendChild(cell(r[index], kind, r)));
      body.appendChild(tr);
    }
    document.getElementById('rows').replaceWith(body);
    document.getElementById('page').textContent = 'page ' + (page + 1) + ' / ' + pages;
    document.getElementById('count').textContent = filtered.length + ' of ' + data.rows.length + ' features';
    document.getElementById('prev').disabled = page === 0;
    document.getElementById('next').disabled = page >= pages - 1;
  }

  document.getElementById('search').addEventListener('input', () => applyFilter());
  document.getElementById('prev').addEventListener('click', () => { page--; render(); });
  document.getElementById('next').addEventListener('click', () => { page++; render(); });
  render();
  window.VSL_READY = true;
})();
"""

_FEATURE_BODY = """
<p><a href="index.html">&larr; all features</a> · <a id="prev" href="#">prev</a> · <a id="next" href="#">next</a></p>
<h1 id="title">Feature</h1>
<div class="meta" id="meta"></div>
<div id="concept"></div>
<h2>Explanations</h2>
<table id="explanations"><thead><tr><th>method</th><th>explanation</th><th>AUROC (mean)</th>
<th>AUROC (max)</th><th>coefficient</th></tr></thead><tbody></tbody></table>
<div id="answers-section"><h2>Raw answers</h2><table id="answers"><thead><tr><th>method</th><th>coefficient</th>
<th>raw generation</th></tr></thead><tbody></tbody></table></div>
<h2>Top images</h2>
<p><label><input type="checkbox" id="show-heatmap" checked> patch heatmap (off: the images' own colours)</label></p>
<div class="images" id="images"></div>
<h2>Activation histogram (nonzero patch activations)</h2>
<div id="histogram" style="width: 720px; height: 320px;"></div>
<div id="sweep-section"><h2>Steering coefficient sweep (whole run)</h2>
<table id="sweep"><thead><tr><th>multiple</th><th>coefficient</th><th>changed</th><th>distinct</th>
<th>flagged</th><th>score</th><th>chosen</th></tr></thead><tbody></tbody></table></div>
<script src="assets/plotly.min.js"></script>
<script src="data/common.js"></script>
"""

_FEATURE_JS = r"""
(function () {
  const feature = parseInt(location.hash.replace(/^#/, ''), 10);
  window.addEventListener('hashchange', () => { window.VSL_READY = false; location.reload(); });
  const fmt = v => (v === null || v === undefined) ? '–' : Number(v).toPrecision(3);
  function row(table, values) {
    const tr = document.createElement('tr');
    for (const v of values) { const td = document.createElement('td'); td.textContent = v; tr.appendChild(td); }
    document.querySelector(table + ' tbody').appendChild(tr);
    return tr;
  }
  const common = window.VSL_COMMON || {sweep: []};
  // The heatmap tints active patches green, which hides the colour a colour feature detects.
  const heatmapBox = document.getElementById('show-heatmap');
  const heatmapOn = () => heatmapBox.checked;
  heatmapBox.addEventListener('change', () => {
    for (const img of document.querySelectorAll('#images img')) {
      img.src = heatmapOn() ? img.dataset.heatmap : img.dataset.original;
    }
  });
  if (common.sweep.length === 0) document.getElementById('sweep-section').style.display = 'none';
  for (const s of common.sweep) {
    row('#sweep', [fmt(s.multiple), fmt(s.coefficient), fmt(s.changed_fraction), fmt(s.distinct_fraction),
                   fmt(s.degenerate_fraction), fmt(s.score), s.chosen ? 'yes' : '']);
  }
  if (Number.isNaN(feature)) { document.getElementById('title').textContent = 'No feature given (use feature.html#ID)'; return; }
  // Neighbours in the exported feature list (mining may have covered a subset of the SAE).
  const ids = common.features || [], at = ids.indexOf(feature);
  for (const [id, step] of [['prev', -1], ['next', 1]]) {
    const link = document.getElementById(id), other = ids[at + step];
    if (at >= 0 && other !== undefined) link.href = '#' + other; else link.style.visibility = 'hidden';
  }

  window.VSL_FEATURE = undefined;
  const script = document.createElement('script');
  script.src = 'data/features/' + feature + '.js';
  script.onload = () => show(window.VSL_FEATURE);
  script.onerror = () => { document.getElementById('title').textContent = 'Feature ' + feature + ' is not in this dashboard'; };
  document.body.appendChild(script);

  function show(d) {
    document.title = 'Feature ' + d.feature + ' · vis_steer_lens';
    document.getElementById('title').textContent = 'Feature ' + d.feature;
    const s = d.stats;
    document.getElementById('meta').textContent = d.sae_id + ' · firing freq ' + fmt(s.frac_nonzero) +
      ' of patches, ' + fmt(s.frac_images) + ' of images · max act ' + fmt(s.max_act) + ' · mean act ' + fmt(s.mean_act);
    if (d.concept) {
      document.getElementById('concept').textContent = 'Ground truth: ' + (d.concept.best_object_concept || d.concept.best_concept) +
        ' (AUROC ' + fmt(d.concept.best_object_auroc ?? d.concept.best_auroc) + (d.concept.clear ? ', clear' : ', not clear') + ')';
    }
    if (d.explanations.length === 0) row('#explanations', ['–', 'no explanations', '', '', '']);
    let answers = 0;
    const ordered = d.explanations.slice().sort((a, b) => (b.method === 'steering') - (a.method === 'steering'));
    for (const e of d.explanations) {
      row('#explanations', [e.method_label, e.explanation ?? '', fmt(e.auroc_mean), fmt(e.auroc_max),
                            e.coefficient === null || e.coefficient === undefined ? '' : fmt(e.coefficient)]);
    }
    for (const e of ordered) {
      if (!e.raw_generation) continue;
      const tr = row('#answers', [e.method_label, e.coefficient === null || e.coefficient === undefined ? '' : fmt(e.coefficient), e.raw_generation]);
      tr.lastChild.className = 'answer'; answers++;
    }
    if (answers === 0) document.getElementById('answers-section').style.display = 'none';
    const images = document.getElementById('images');
    if (d.top.length === 0) images.textContent = d.stats.max_act === null ? 'No mined images in this run (run mine to see them).' : 'This feature never fired on the mined images.';
    d.top.forEach((t, i) => {
      const fig = document.createElement('figure');
      const a = document.createElement('a'); a.href = t.image; a.title = 'original image';
      const img = document.createElement('img'); img.alt = 'image ' + t.image_id;
      img.dataset.heatmap = t.heatmap; img.dataset.original = t.image;
      img.src = heatmapOn() ? t.heatmap : t.image;
      a.appendChild(img); fig.appendChild(a);
      const cap = document.createElement('figcaption');
      cap.textContent = '#' + (i + 1) + ' · image ' + t.image_id + ' · score ' + fmt(t.score);
      fig.appendChild(cap); images.appendChild(fig);
    });
    if (window.Plotly) {
      Plotly.newPlot('histogram', [{type: 'bar', x: d.histogram.centres, y: d.histogram.counts,
        width: d.histogram.width || undefined, marker: {color: '#2a9d4b'}}],
        {margin: {t: 10, r: 10, b: 40, l: 50}, xaxis: {title: {text: 'activation'}},
         yaxis: {title: {text: 'patches'}}, bargap: 0}, {displaylogo: false, responsive: true});
    }
    window.VSL_READY = true;
  }
})();
"""


__all__ = ["ROWS_PER_PAGE", "export_dashboard"]
