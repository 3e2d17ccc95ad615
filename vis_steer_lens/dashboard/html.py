"""A static HTML dashboard of a results folder: works from ``file://``, with no server and no network.

Layout of ``out_dir``::

    index.html              feature table: live features, filters, sorting, search, the run's summary
    sweeps.html             the run's sweeps (RUN/sweeps/<axis>.csv) as tables, figures in sweeps/<axis>.html
    feature.html            one viewer for every feature: feature.html#F loads F's chunk of data
    data/index.js           window.VSL_INDEX = {...}: one compact row per feature, and the run's summary
    data/common.js          window.VSL_COMMON = {...}: run metadata, feature ids, coefficient sweep, prompts
    data/features/chunk-N.js  window.VSL_FEATURES = {F: {...}}: top images with their activation maps,
                            explanations, answers, histogram of FEATURES_PER_FILE features (the N-th block
                            of the feature list), so a large SAE is hundreds of files, not tens of thousands
    images/ID.png|jpg       each source image once, shared by every feature that shows it, at most
                            PAGE_IMAGE_SIZE pixels on a side (PNG when it has few colours, else JPEG)
    images/thumb/ID.*       its index thumbnail, when the image is larger than THUMB_SIZE

Data files are scripts assigning a global rather than JSON, because browsers refuse ``fetch`` on
``file://`` but do run ``<script src>``. The index holds only text and numbers (images are files,
loaded lazily for the visible page), so thousands of features stay a few megabytes. Activation
maps are numbers drawn over the images in the browser (outlines, or a shade over inactive
patches), so no tinted copy of an image is written and the images keep their colours. The pages
need no library: the histogram is drawn as SVG.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vis_steer_lens.atomic import atomic_path, atomic_write_text
from vis_steer_lens.dashboard.results import DashboardResults, _clean, method_agreement
from vis_steer_lens.dashboard.sweeps import sweep_tables, write_sweeps_page
from vis_steer_lens.display import MASK_FILL
from vis_steer_lens.evaluate.ground_truth import GROUND_TRUTH_METHOD
from vis_steer_lens.runs import RunFolder

ROWS_PER_PAGE = 100
#: Longest side of the images on feature pages, and of the index's thumbnails, in pixels.
PAGE_IMAGE_SIZE = 256
THUMB_SIZE = 64
#: JPEG quality of exported images with many colours (photos); few-colour images are PNGs.
JPEG_QUALITY = 85
#: Features per data file (``data/features/chunk-N.js``).
FEATURES_PER_FILE = 64
#: Features listed as a feature's nearest by decoder cosine (with ``sae``).
N_NEAREST = 8
#: Columns of each index row, in order (per-method columns follow: explanation, auroc, flag).
INDEX_COLUMNS = [
    "feature",
    "frac_nonzero",
    "frac_images",
    "max_act",
    "concept",
    "clear",
    "thumb",
    "live",
    "agreement",
    "flagged",
]
#: Flags that mark an answer as not an explanation (the explainers' ``flag`` column); ``dead``
#: marks a feature that never fired and is shown by the live/dead toggle instead.
FLAGGED = ("repetition", "unfinished", "empty")


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


def _save_web_image(image: Image.Image, stem: Path, longest: int) -> Path:
    """``image`` shrunk (never enlarged) to ``longest`` pixels on its longer side: a PNG when it has at
    most 256 colours (drawings, the toy world), else a JPEG. Returns the path written."""
    image = image.convert("RGB")
    scale = longest / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.LANCZOS)
    few_colours = image.getcolors(256) is not None
    path = stem.with_suffix(".png" if few_colours else ".jpg")
    with atomic_path(path, sync=False) as tmp:
        if few_colours:
            image.quantize(256, method=Image.Quantize.MEDIANCUT).save(tmp, format="PNG", optimize=True)
        else:
            image.save(tmp, format="JPEG", quality=JPEG_QUALITY)
    return path


def _records(frame, columns: list[str] | None = None) -> list[dict[str, Any]]:
    """A table as JSON-safe records (NaN → ``None``, numbers rounded)."""
    if frame is None:
        return []
    if columns is not None:
        frame = frame[[c for c in columns if c in frame]]
    out = []
    for record in frame.to_dict("records"):
        out.append(
            {
                k: (_num(v, 4) if isinstance(v, float) else v)
                for k, v in ((k, _clean(v)) for k, v in record.items())
            }
        )
    return out


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


def _sweep_answers(results: DashboardResults) -> dict[int, list[dict[str, Any]]]:
    """Per feature of the coefficient sweep's sample, its steered answer at each multiple."""
    sweep, sample = results.sweep, results.sweep_sample
    if sweep is None or not sample or "explanations" not in sweep:
        return {}
    out: dict[int, list[dict[str, Any]]] = {}
    for row in sweep.to_dict("records"):
        answers = row["explanations"]
        if isinstance(answers, str):
            try:
                answers = ast.literal_eval(answers)  # a list written by pandas' to_csv
            except (ValueError, SyntaxError):
                continue
        if not isinstance(answers, (list, tuple)) or len(answers) != len(sample):
            continue
        for feature, answer in zip(sample, answers, strict=True):
            out.setdefault(int(feature), []).append(
                {
                    "multiple": _num(row.get("multiple")),
                    "coefficient": _num(row.get("coefficient")),
                    "answer": answer if isinstance(answer, str) else None,
                    "chosen": bool(row.get("chosen", False)),
                }
            )
    return out


def _prompt_texts(explanations: dict[int, list[dict[str, Any]]]) -> dict[str, str]:
    """The instruction each method's explainer was given, by method label (registered prompts only)."""
    from vis_steer_lens.explain.prompts import get_prompt

    texts: dict[str, str] = {}
    for records in explanations.values():
        for e in records:
            label, prompt_id = e.get("method_label"), e.get("prompt_id")
            if label in texts or not isinstance(prompt_id, str) or e.get("method") == GROUND_TRUTH_METHOD:
                continue
            try:
                prompt = get_prompt(prompt_id)
            except (KeyError, ValueError):
                continue
            texts[label] = prompt.steering if e.get("method") == "steering" else prompt.topk("mask")
    return texts


def nearest_features(decoder: torch.Tensor, features: list[int], n: int = N_NEAREST) -> dict[int, list[list]]:
    """Each feature's ``n`` nearest other features by the cosine of their decoder rows.

    Args:
        decoder: The SAE's decoder ``[d_sae, d_in]`` (``W_dec``).
        features: The features to find neighbours of.
        n: Neighbours per feature.

    Returns:
        ``feature -> [[other, cosine], ...]``, most similar first (cosines to 4 digits).
    """
    unit = torch.nn.functional.normalize(decoder.detach().float().cpu(), dim=-1)
    n = min(n, unit.shape[0] - 1)
    out: dict[int, list[list]] = {}
    for start in range(0, len(features), 1024):  # chunks keep [chunk, d_sae] small at 65k features
        chunk = features[start : start + 1024]
        sims = unit[chunk] @ unit.T
        sims[torch.arange(len(chunk)), torch.tensor(chunk)] = -float("inf")  # not itself
        values, indices = sims.topk(n, dim=-1) if n > 0 else (sims[:, :0], sims[:, :0].long())
        for feature, vals, idx in zip(chunk, values.tolist(), indices.tolist(), strict=True):
            out[int(feature)] = [[int(i), _num(v, 4)] for i, v in zip(idx, vals, strict=True)]
    return out


@dataclass
class DashboardSize:
    """What a dashboard export wrote.

    Attributes:
        total_bytes: Bytes of every file under the dashboard folder.
        image_bytes: Bytes of its images (``images/``).
        fixed_bytes: Bytes that do not grow with the features (the two pages).
        n_images: Image files (each source image once, and a thumbnail of each large one).
        n_features: Features exported.
    """

    total_bytes: int
    image_bytes: int
    fixed_bytes: int
    n_images: int
    n_features: int

    def estimate(self, n_features: int) -> int:
        """Bytes a dashboard of ``n_features`` features would take: the fixed files plus this one's
        bytes per feature (data and images; an upper bound on images, which features share)."""
        per_feature = (self.total_bytes - self.fixed_bytes) / max(self.n_features, 1)
        return int(self.fixed_bytes + per_feature * n_features)

    def describe(self, d_sae: int | None = None) -> str:
        """One line: the size, and an estimate at ``d_sae`` features when that is more."""
        text = (
            f"{self.total_bytes / 1e6:.1f} MB ({self.image_bytes / 1e6:.1f} MB in {self.n_images} image "
            f"files) for {self.n_features} features"
        )
        if d_sae and d_sae > self.n_features:
            text += f"; about {self.estimate(d_sae) / 1e6:.0f} MB at all {d_sae} features"
        return text


def dashboard_size(out_dir: str | Path, n_features: int) -> DashboardSize:
    """Measure a written dashboard folder (see :class:`DashboardSize`).

    Args:
        out_dir: The dashboard folder.
        n_features: Features it holds (``n_features`` of ``data/index.js``).
    """
    out = Path(out_dir)
    total = image = fixed = count = 0
    for path in out.rglob("*"):
        if path.is_file():
            size = path.stat().st_size
            total += size
            top = path.relative_to(out).parts[0]
            if top == "images":
                image += size
                count += 1
            elif path.suffix == ".html":
                fixed += size
    return DashboardSize(total, image, fixed, count, n_features)


def export_dashboard(
    results_dir: str | Path,
    out_dir: str | Path,
    *,
    exclude_flagged: bool = False,
    sae: Any = None,
    vlm: Any = None,
) -> Path:
    """Write the static dashboard of a results folder.

    Features that fired come first in the index, in mining order; those that never fired follow
    (and are hidden until the index's "dead" toggle shows them). Each source image is written once,
    shrunk for the web (:data:`PAGE_IMAGE_SIZE` and a :data:`THUMB_SIZE` thumbnail), and shared by
    every feature that shows it; activation maps travel as numbers and are drawn over the image in
    the browser, so the images keep their colours.

    Args:
        results_dir: A results folder with ``mined/`` and optionally ``explanations.parquet``,
            ``scores.csv``, ``feature_concepts.csv`` and ``coefficient_sweep.csv`` (the demo's output).
        out_dir: Output folder (created; existing dashboard files are overwritten).
        exclude_flagged: Leave out answers flagged as repetitions, unfinished or empty.
        sae: The run's SAE (anything with ``W_dec [d_sae, d_in]``); adds each feature's nearest
            features by decoder cosine. ``None`` leaves them out.
        vlm: The run's model (with ``sae``); adds each live feature's text side, its top tokens
            through the projector and the unembedding
            (:func:`~vis_steer_lens.dashboard.text_side.text_side_tokens`, at the run's coefficient
            and empty image). ``None`` leaves them out.

    Returns:
        The path of ``index.html``; open it in a browser (``file://`` works).

    Raises:
        FileNotFoundError: ``results_dir`` has no ``mined/`` results.
    """
    results = DashboardResults.load(results_dir)
    mined = results.mined
    out = Path(out_dir)
    for sub in ("data/features", "images/thumb"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    methods = results.method_labels
    controls = set(results.control_labels)
    explainers = [m for m in methods if m not in controls and m != GROUND_TRUTH_METHOD]
    explanations = results.explanation_records(exclude_flagged=exclude_flagged)
    concepts = results.concept_records()
    sweep_answers = _sweep_answers(results)
    prompts = _prompt_texts(explanations)
    # Plain dicts: a pandas lookup per feature and statistic is most of the time at 65,536 features.
    stats = mined.stats.set_index("feature").to_dict("index") if mined is not None else None
    nearest = nearest_features(sae.W_dec, results.features) if sae is not None else {}
    live_ids = [f for f in results.features if stats is None or stats[f]["frac_images"] > 0]
    text_side: dict[int, list[list]] = {}
    if vlm is not None and sae is not None:
        from vis_steer_lens.dashboard.text_side import text_side_tokens

        choice = RunFolder(results.root).coefficient()
        text_side = text_side_tokens(
            vlm,
            sae,
            live_ids,
            coefficient=choice.coefficient if choice is not None else None,
            empty_image=choice.empty_image if choice is not None else "white",
        )
    quantile_tops: dict[int, list[dict[str, Any]]] = {}
    if vlm is not None and sae is not None and mined is not None:
        from vis_steer_lens.dashboard.quantiles import N_IMAGES, quantile_examples

        quantile_tops = quantile_examples(
            vlm, sae, results.image, min(N_IMAGES, mined.images_mined), live_ids
        )
    # Without mining (a run with explanations only) the statistics are blank and no image is shown.
    no_stat = {c: None for c in ("frac_nonzero", "frac_images", "max_act", "mean_act", "mean_nonzero_act")}
    written: dict[int, tuple[str, str]] = {}  # image id -> (page image, thumbnail), relative to out

    def write_image(image_id: int) -> tuple[str, str]:
        if image_id not in written:
            image = results.image(image_id)
            page = _save_web_image(image, out / "images" / str(image_id), PAGE_IMAGE_SIZE)
            thumb = page
            if max(image.size) > THUMB_SIZE:
                thumb = _save_web_image(image, out / "images" / "thumb" / str(image_id), THUMB_SIZE)
            written[image_id] = (page.relative_to(out).as_posix(), thumb.relative_to(out).as_posix())
        return written[image_id]

    evidence_dir = RunFolder(results.root).evidence_dir

    def write_evidence(feature: int, records: list[dict[str, Any]]) -> None:
        """The scorer's evidence of one feature's explanations: their strips stacked into one PNG per
        feature (one file, not one per method), each record pointing at its band with its activations."""
        bands = []
        for record in records:
            kept, activations = record.pop("evidence", None), record.pop("positives_max", None)
            record["evidence"] = None
            if isinstance(kept, dict) and (evidence_dir / kept["file"]).is_file():
                with Image.open(evidence_dir / kept["file"]) as strip:
                    bands.append((record, strip.convert("RGB"), activations[: int(kept["images"])]))
        if not bands:
            return
        sheet = Image.new(
            "RGB", (max(b.width for _, b, _ in bands), sum(b.height for _, b, _ in bands)), "white"
        )
        y = 0
        path = (out / "images" / "evidence" / str(feature)).with_suffix(".png")
        for record, band, activations in bands:
            sheet.paste(band, (0, y))
            record["evidence"] = {
                "image": path.relative_to(out).as_posix(),
                "y": y,
                "width": band.width,
                "height": band.height,
                "activations": [_num(v, 4) for v in activations],
            }
            y += band.height
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, sync=False) as tmp:
            sheet.save(tmp, format="PNG", optimize=True)

    position = {f: i for i, f in enumerate(results.features)}
    chunks: dict[int, dict[str, Any]] = {}

    rows = []
    fired = [f for f in results.features if stats is None or stats[f]["frac_images"] > 0]
    never = [f for f in results.features if stats is not None and stats[f]["frac_images"] <= 0]
    for feature in fired + never:  # dead features last: they have nothing to show
        stat = stats[feature] if stats is not None else no_stat
        max_act = float(stat["max_act"]) if stats is not None else None
        top = []
        for image_id, score, amap in results.top_images(feature):
            page_image, thumb = write_image(int(image_id))
            top.append(
                {
                    "image_id": int(image_id),
                    "score": _num(score, 4),
                    "image": page_image,
                    "thumb": thumb,
                    "map": [[_num(v, 3) for v in r] for r in amap.tolist()],
                }
            )
        quantile_examples_shown = []
        for example in quantile_tops.get(int(feature), []):
            page_image, thumb = write_image(example["image_id"])
            quantile_examples_shown.append({**example, "image": page_image, "thumb": thumb})
        edges, counts = mined.histogram(feature) if mined is not None else (torch.zeros(0), torch.zeros(0))
        feature_explanations = explanations.get(feature, [])
        write_evidence(int(feature), feature_explanations)
        by_method = {e["method_label"]: e for e in feature_explanations}
        concept = concepts.get(feature)
        concept_text = None
        if concept is not None:
            concept_text = concept.get("best_object_concept") or concept.get("best_concept")
        live = stats is not None and max_act is not None and float(stat["frac_images"]) > 0
        if stats is None:  # nothing mined: live unless every explainer found it dead
            live = not feature_explanations or any(e.get("flag") != "dead" for e in feature_explanations)
        texts = [
            by_method[m].get("explanation") if by_method.get(m, {}).get("flag") is None else None
            for m in explainers
            if m in by_method
        ]
        agreement = method_agreement(texts)
        flagged = sum(by_method.get(m, {}).get("flag") in FLAGGED for m in explainers)
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
            "live": bool(live),
            "agreement": _num(agreement, 3),
            "top": top,
            "explanations": feature_explanations,
            "concept": concept,
            "histogram": {
                "centres": [_num(v, 5) for v in ((edges[:-1] + edges[1:]) / 2).tolist()],
                "width": _num(float(edges[1] - edges[0]), 6) if len(edges) > 1 else 0,
                "counts": [int(c) for c in counts.tolist()],
            },
            "sweep_answers": sweep_answers.get(int(feature), []),
            "nearest": nearest.get(int(feature), []),
            "text_side": text_side.get(int(feature), []),
            "quantiles": quantile_examples_shown,
        }
        chunks.setdefault(position[feature] // FEATURES_PER_FILE, {})[str(int(feature))] = payload
        clear = concept.get("clear") if concept is not None else None
        row = [
            int(feature),
            _num(stat["frac_nonzero"]),
            _num(stat["frac_images"]),
            _num(max_act),
            concept_text,
            None if clear is None else bool(clear),
            top[0]["thumb"] if top else None,
            1 if live else 0,
            _num(agreement, 3),
            flagged,
        ]
        for method in methods:
            e = by_method.get(method, {})
            row += [e.get("explanation"), _num(e.get("auroc_mean"), 4), e.get("flag")]
        rows.append(row)

    for chunk, payloads in sorted(chunks.items()):
        atomic_write_text(
            out / "data" / "features" / f"chunk-{chunk}.js", _js("VSL_FEATURES", payloads), sync=False
        )
    columns = INDEX_COLUMNS + [f"{kind}:{m}" for m in methods for kind in ("explanation", "auroc", "flag")]
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
        "controls": [m for m in methods if m in controls],
        "explainers": explainers,
        "has_scores": results.scores is not None,
        "has_concepts": results.concepts is not None,
        "has_clear": results.concepts is not None and "clear" in results.concepts,
        "rows_per_page": ROWS_PER_PAGE,
        "features_per_file": FEATURES_PER_FILE,
        "flagged": list(FLAGGED),
    }
    summary = {
        "methods": [
            {
                "method_label": m,
                "control": m in controls,
                "explained": sum(1 for r in rows if r[columns.index(f"explanation:{m}")] is not None),
                "flagged": sum(1 for r in rows if r[columns.index(f"flag:{m}")] in FLAGGED),
            }
            for m in methods
        ],
        "comparison": _records(results.comparison),
        "margins": _records(results.margins),
    }
    atomic_write_text(
        out / "data" / "index.js",
        _js("VSL_INDEX", {"meta": meta, "summary": summary, "columns": columns, "rows": rows}),
    )
    atomic_write_text(
        out / "data" / "common.js",
        _js(
            "VSL_COMMON",
            {
                "meta": meta,
                "features": results.features,
                "sweep": _sweep_records(results.sweep),
                "prompts": prompts,
                "mask_fill": list(MASK_FILL),
            },
        ),
    )
    atomic_write_text(out / "feature.html", _page("Feature", _FEATURE_BODY, _FEATURE_JS))
    sweeps = write_sweeps_page(results.root, out, _CSS)
    link = (
        '<p id="sweeps-link"><a href="sweeps.html">Sweeps (ablations)</a>: '
        + ", ".join(sweep_tables(results.root))
        + "</p>"
        if sweeps is not None
        else ""
    )
    index = out / "index.html"
    atomic_write_text(index, _page("Features", _INDEX_BODY.replace("__SWEEPS_LINK__", link), _INDEX_JS))
    return index


def read_feature_data(out_dir: str | Path) -> dict[int, dict[str, Any]]:
    """Every feature's page data in a written dashboard (its ``data/features/chunk-*.js``), by feature id.

    Args:
        out_dir: A dashboard folder written by :func:`export_dashboard`.
    """
    out: dict[int, dict[str, Any]] = {}
    for path in sorted(Path(out_dir, "data", "features").glob("chunk-*.js")):
        text = path.read_text()
        payload = json.loads(text[text.index("=") + 1 :].strip().rstrip(";"))
        out.update({int(feature): data for feature, data in payload.items()})
    return out


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
tr.dead td { color: #aaa; }
img.thumb { width: 48px; height: 48px; object-fit: contain; }
.controls { display: flex; flex-wrap: wrap; gap: .6em 1.2em; align-items: center; margin-bottom: .6em; }
#search { width: 22em; padding: 4px; }
.images { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; text-align: center; font-size: .8em; color: #555; }
figure.evidence { display: flex; align-items: center; gap: 1em; margin: .3em 0; text-align: left; }
.evidence-band { flex: none; }
.frame { position: relative; display: inline-block; line-height: 0; border: 1px solid #ccc; }
.frame img { width: 160px; height: auto; display: block; }
.frame canvas { position: absolute; left: 0; top: 0; width: 100%; height: 100%; pointer-events: none; }
.answer { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: .85em; }
.muted { color: #999; }
#summary table { width: auto; } #summary td, #summary th { padding: 2px 8px; }
details { margin: .3em 0; } summary { cursor: pointer; }
"""

_INDEX_BODY = """
<h1>SAE features</h1>
<div class="meta" id="meta"></div>
__SWEEPS_LINK__
<div id="summary"></div>
<div class="controls">
  <input id="search" type="search" placeholder="Search feature id, explanation, concept">
  <span id="search-cols">search in:</span>
</div>
<div class="controls">
  <label><input type="checkbox" id="show-dead"> show dead features</label>
  <label id="clear-box"><input type="checkbox" id="only-clear"> clear features only</label>
  <label>flags <select id="flag-filter"><option value="all">all</option>
    <option value="unflagged">no method flagged</option><option value="flagged">some method flagged</option></select></label>
  <label id="agreement-box">method agreement <select id="agreement-filter"><option value="any">any</option>
    <option value="0.5">&ge; 0.5 (same words)</option><option value="0.25">&ge; 0.25</option>
    <option value="-0.25">&lt; 0.25 (methods disagree)</option></select></label>
</div>
<div class="controls">
  <button id="prev">&larr; Prev</button><span id="page"></span><button id="next">Next &rarr;</button>
  <span id="count" class="muted"></span> <span id="hidden-note" class="muted"></span>
</div>
<table id="features"><thead><tr id="header"></tr></thead><tbody id="rows"></tbody></table>
<script src="data/index.js"></script>
"""

_INDEX_JS = r"""
(function () {
  const data = window.VSL_INDEX;
  if (!data) { document.getElementById('meta').textContent = 'data/index.js is missing.'; return; }
  const meta = data.meta, cols = data.columns, rows = data.rows, perPage = meta.rows_per_page;
  const col = Object.fromEntries(cols.map((c, i) => [c, i]));
  const fmt = v => (v === null || v === undefined) ? '–' : Number(v).toPrecision(3);
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
  // Displayed columns: [header, column index, kind, method]
  const shown = [['feature', col.feature, 'id'], ['top image', col.thumb, 'img'],
                 ['firing freq (patches)', col.frac_nonzero, 'num'],
                 ['firing freq (images)', col.frac_images, 'num'], ['max act', col.max_act, 'num']];
  if (meta.has_concepts) shown.push(['ground-truth concept', col.concept, 'text']);
  if (meta.explainers.length > 1) shown.push(['method agreement', col.agreement, 'num']);
  for (const m of meta.methods) {
    shown.push(['explanation: ' + m, col['explanation:' + m], 'text', m]);
    if (meta.has_scores) shown.push(['AUROC: ' + m, col['auroc:' + m], 'num', m]);
  }
  document.getElementById('meta').textContent = meta.sae_id + ' · ' + meta.hook_name + ' · ' +
    meta.n_features + ' features · ' + meta.images_processed + ' images mined';
  if (!meta.has_clear) document.getElementById('clear-box').style.display = 'none';
  if (meta.explainers.length < 2) document.getElementById('agreement-box').style.display = 'none';

  // The run at a glance: each method's counts, the comparison table and the paired margins.
  (function summary() {
    const box = document.getElementById('summary');
    const cmp = Object.fromEntries((data.summary.comparison || []).map(r => [r.method_label, r]));
    const ci = (r, k) => (r && r[k] !== undefined && r[k] !== null) ? fmt(r[k]) + ((r[k + '_lo'] ?? null) !== null ? ' [' + fmt(r[k + '_lo']) + ', ' + fmt(r[k + '_hi']) + ']' : '') : '–';
    const keys = ['auroc_mean', 'auroc_max', 'clear_auroc_max', 'accuracy'].filter(k => Object.values(cmp).some(r => r[k] !== undefined));
    const t = el('table'); t.id = 'summary-methods';
    const head = el('tr'); ['method', 'explained', 'flagged', ...keys.map(k => k.replace(/_/g, ' '))].forEach(h => head.appendChild(el('th', h)));
    t.appendChild(head);
    const labels = [...new Set([...data.summary.methods.map(m => m.method_label), ...Object.keys(cmp)])];
    const counts = Object.fromEntries(data.summary.methods.map(m => [m.method_label, m]));
    for (const label of labels) {
      const tr = el('tr'), c = counts[label];
      tr.appendChild(el('td', label + (c && c.control ? ' (control)' : '')));
      tr.appendChild(el('td', c ? String(c.explained) : '–', 'num'));
      tr.appendChild(el('td', c ? String(c.flagged) : '–', 'num'));
      for (const k of keys) tr.appendChild(el('td', ci(cmp[label], k), 'num'));
      t.appendChild(tr);
    }
    box.appendChild(el('h2', 'Methods')); box.appendChild(t);
    const margins = data.summary.margins || [];
    if (margins.length) {
      const d = el('details'); d.appendChild(el('summary', 'Paired margins (' + margins.length + ' pairs, per shared feature, with 95% intervals)'));
      const mt = el('table'); mt.id = 'summary-margins';
      const mh = el('tr'); ['method', 'over', 'features', 'AUROC margin', 'accuracy margin', 'share of ceiling'].forEach(h => mh.appendChild(el('th', h)));
      mt.appendChild(mh);
      for (const r of margins) {
        const tr = el('tr');
        tr.appendChild(el('td', r.method_label)); tr.appendChild(el('td', r.control + (r.compared_with === 'control' ? ' (control)' : '')));
        tr.appendChild(el('td', (r.n_features ?? '–') + ' ' + (r.features ?? ''), 'num'));
        tr.appendChild(el('td', ci(r, 'auroc_margin'), 'num')); tr.appendChild(el('td', ci(r, 'accuracy_margin'), 'num'));
        tr.appendChild(el('td', fmt(r.auroc_share_of_ceiling), 'num'));
        mt.appendChild(tr);
      }
      d.appendChild(mt); box.appendChild(d);
    }
  })();

  // Search columns: by default the id, the concept and the explainers' answers, not the controls'.
  const searchGroups = [['id', 'feature id', [col.feature], true], ['concept', 'concept', [col.concept], true]];
  for (const m of meta.methods) {
    const control = meta.controls.includes(m);
    searchGroups.push(['explanation:' + m, m, [col['explanation:' + m]], !control]);
  }
  const searchBox = document.getElementById('search-cols');
  for (const [key, label, , on] of searchGroups) {
    const l = el('label'); const c = el('input'); c.type = 'checkbox'; c.checked = on; c.dataset.key = key;
    c.addEventListener('change', () => { haystack = null; applyFilter(); });
    l.appendChild(c); l.appendChild(document.createTextNode(' ' + label + ' ')); searchBox.appendChild(l);
  }
  let haystack = null;  // search text per row, built for the chosen columns on first use
  function buildHaystack() {
    const on = new Set([...searchBox.querySelectorAll('input:checked')].map(c => c.dataset.key));
    const idx = searchGroups.filter(g => on.has(g[0])).flatMap(g => g[2]);
    haystack = rows.map(r => idx.map(i => r[i] ?? '').join(' \u0001 ').toLowerCase());
  }

  let order = rows.map((_, i) => i), filtered = order, page = 0, sortCol = null, sortDir = 1, sortMethod = null;
  const header = document.getElementById('header');
  shown.forEach(([name, index, kind, method]) => {
    const th = el('th', name);
    th.dataset.column = cols[index];
    if (kind !== 'img') th.addEventListener('click', () => sortBy(index, th, kind === 'num' ? method : null));
    header.appendChild(th);
  });

  function sortBy(index, th, method) {
    sortDir = (sortCol === index) ? -sortDir : (index !== col.feature && th.dataset.column !== 'concept' && !th.dataset.column.startsWith('explanation:') ? -1 : 1);
    sortCol = index; sortMethod = method || null;
    header.querySelectorAll('th').forEach(h => h.classList.remove('sorted-asc', 'sorted-desc'));
    th.classList.add(sortDir > 0 ? 'sorted-asc' : 'sorted-desc');
    order = rows.map((_, i) => i);
    order.sort((a, b) => {
      const x = rows[a][index], y = rows[b][index];
      if (x === y) return a - b;
      if (x === null || x === undefined) return 1;   // missing values last, either direction
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sortDir;
    });
    applyFilter(false);
  }

  function applyFilter(resetPage = true) {
    const q = document.getElementById('search').value.trim().toLowerCase();
    if (q && haystack === null) buildHaystack();
    const dead = document.getElementById('show-dead').checked;
    const clear = meta.has_clear && document.getElementById('only-clear').checked;
    const flags = document.getElementById('flag-filter').value;
    const agree = document.getElementById('agreement-filter').value;
    const minAgree = agree === 'any' ? null : Number(agree);
    // Sorting by a method's AUROC leaves out that method's flagged answers (a repetition can score high).
    const flagCol = sortMethod ? col['flag:' + sortMethod] : null;
    const iLive = col.live, iClear = col.clear, iFlagged = col.flagged, iAgree = col.agreement;
    let hiddenFlagged = 0;
    filtered = [];
    for (const i of order) {
      const r = rows[i];
      if (!dead && !r[iLive]) continue;
      if (clear && r[iClear] !== true) continue;
      if (flags === 'unflagged' && r[iFlagged] > 0) continue;
      if (flags === 'flagged' && !(r[iFlagged] > 0)) continue;
      if (minAgree !== null) {
        const a = r[iAgree];
        if (a === null || a === undefined) continue;
        if (minAgree >= 0 ? a < minAgree : a >= -minAgree) continue;
      }
      if (flagCol !== null && r[flagCol] !== null && r[flagCol] !== undefined && r[flagCol] !== 'dead') { hiddenFlagged++; continue; }
      if (q && !haystack[i].includes(q)) continue;
      filtered.push(i);
    }
    document.getElementById('hidden-note').textContent = hiddenFlagged ?
      '(' + hiddenFlagged + ' answers flagged by ' + sortMethod + ' left out while sorting by its AUROC)' : '';
    if (resetPage) page = 0;
    render();
  }

  function cell(value, kind, row) {
    const td = document.createElement('td');
    if (kind === 'id') {
      const a = document.createElement('a');
      a.href = 'feature.html#' + value; a.textContent = value; td.appendChild(a);
    } else if (kind === 'img') {
      if (value !== null && value !== undefined) {
        const a = document.createElement('a'); a.href = 'feature.html#' + row[col.feature];
        const img = document.createElement('img');
        img.className = 'thumb'; img.loading = 'lazy'; img.src = value; img.alt = 'top image';
        a.appendChild(img); td.appendChild(a);
      }
    } else if (kind === 'num') {
      td.className = 'num';
      td.textContent = fmt(value);
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
      const r = rows[i], tr = document.createElement('tr');
      tr.dataset.feature = r[col.feature];
      if (!r[col.live]) tr.className = 'dead';
      shown.forEach(([, index, kind, method]) => {
        const td = cell(r[index], kind, r);
        const flag = method && kind === 'text' ? r[col['flag:' + method]] : null;
        if (flag) { td.title = 'flagged: ' + flag; td.classList.add('muted'); }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
    document.getElementById('rows').replaceWith(body);
    document.getElementById('page').textContent = 'page ' + (page + 1) + ' / ' + pages;
    document.getElementById('count').textContent = filtered.length + ' of ' + rows.length + ' features';
    document.getElementById('prev').disabled = page === 0;
    document.getElementById('next').disabled = page >= pages - 1;
  }

  document.getElementById('search').addEventListener('input', () => applyFilter());
  for (const id of ['show-dead', 'only-clear', 'flag-filter', 'agreement-filter']) {
    document.getElementById(id).addEventListener('change', () => applyFilter());
  }
  document.getElementById('prev').addEventListener('click', () => { page--; render(); });
  document.getElementById('next').addEventListener('click', () => { page++; render(); });
  applyFilter();
  window.VSL_READY = true;
})();
"""

_FEATURE_BODY = """
<p><a href="index.html">&larr; all features</a> · <a id="prev" href="#">prev</a> · <a id="next" href="#">next</a>
<span id="live-link" style="display: none"> · <a href="live.html">steer it live</a></span></p>
<h1 id="title">Feature</h1>
<div class="meta" id="meta"></div>
<div id="concept"></div>
<h2>Explanations</h2>
<table id="explanations"><thead><tr><th>method</th><th>explanation</th><th>flag</th><th>AUROC (mean)</th>
<th>AUROC (max)</th><th>coefficient</th></tr></thead><tbody></tbody></table>
<div id="answers-section"><h2>Raw answers</h2><table id="answers"><thead><tr><th>method</th><th>coefficient</th>
<th>raw generation</th></tr></thead><tbody></tbody></table></div>
<div id="sweep-answers-section"><h2>Steered answers at each coefficient multiple</h2>
<table id="sweep-answers"><thead><tr><th>multiple</th><th>coefficient</th><th>answer</th><th>run's choice</th></tr></thead>
<tbody></tbody></table></div>
<h2>Top images</h2>
<p><label><input type="checkbox" id="show-overlay" checked> mark the active patches</label>
<label>as <select id="overlay-style"><option value="outline">outlines</option>
<option value="translucent">a translucent shade over inactive patches</option></select></label>
<span class="muted">(the image's own colours are kept either way)</span></p>
<div class="images" id="images"></div>
<div id="quantiles-section"><h2>Below the top: images at quantiles of its activation</h2>
<p class="muted">Among the first mined images it fired on, the one whose peak activation sits nearest each quantile.</p>
<div class="images" id="quantiles"></div></div>
<div id="shown-section"><h2>What the image explainers were shown</h2><div id="shown"></div></div>
<div id="evidence-section"><h2>The scorer's evidence: images drawn from each explanation</h2>
<p class="muted">The first images generated from each method's explanation, with the feature's peak activation on each
(compare with the top images' scores above; the generation AUROC ranks all of them against random images).</p>
<div id="evidence"></div></div>
<div id="nearest-section"><h2>Nearest features (decoder cosine)</h2><ol id="nearest"></ol></div>
<div id="text-side-section"><h2>Text side: top tokens of the direction</h2>
<p class="muted">The mean change of the soft image tokens when the feature is steered on the empty image,
read through the language model's unembedding (its layers left out).</p><ol id="text-side"></ol></div>
<div id="prompts-section"><h2>Prompts</h2><div id="prompts"></div></div>
<h2>Activation histogram (nonzero patch activations)</h2>
<svg id="histogram" width="720" height="240" role="img" aria-label="activation histogram"></svg>
<div id="sweep-section"><h2>Steering coefficient sweep (whole run)</h2>
<table id="sweep"><thead><tr><th>multiple</th><th>coefficient</th><th>changed</th><th>distinct</th>
<th>flagged</th><th>score</th><th>chosen</th></tr></thead><tbody></tbody></table></div>
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
  const common = window.VSL_COMMON || {sweep: [], prompts: {}, mask_fill: [128, 128, 128]};
  const hide = id => { document.getElementById(id).style.display = 'none'; };

  // Activation maps are numbers drawn over the image, never a tint: outlines around the active
  // patches, a shade over the inactive ones, or (as Top-k was shown them) inactive patches greyed.
  // Each map has its image's own grid (rows x cols); a patch covers 1/cols of the width, 1/rows of the height.
  function drawMap(canvas, map, style, scale) {
    const ctx = canvas.getContext('2d'), W = canvas.width, H = canvas.height;
    ctx.clearRect(0, 0, W, H);
    canvas.dataset.style = style;
    if (style === 'off' || !map || !map.length) return;
    const h = map.length, w = map[0].length, cw = W / w, ch = H / h;
    const v = (r, c) => (r >= 0 && r < h && c >= 0 && c < w) ? (map[r][c] || 0) : 0;
    const cellRect = (r, c) => [Math.floor(c * cw), Math.floor(r * ch), Math.ceil((c + 1) * cw) - Math.floor(c * cw), Math.ceil((r + 1) * ch) - Math.floor(r * ch)];
    if (style === 'masked') {
      ctx.fillStyle = 'rgb(' + common.mask_fill.join(',') + ')';
      for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) if (!(v(r, c) > 0)) ctx.fillRect(...cellRect(r, c));
      return;
    }
    if (style === 'translucent') {
      for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
        const a = 0.7 * (1 - Math.min(Math.max(v(r, c), 0) / (scale || 1), 1));
        if (a > 0.001) { ctx.fillStyle = 'rgba(0,0,0,' + a.toFixed(3) + ')'; ctx.fillRect(...cellRect(r, c)); }
      }
      return;
    }
    ctx.beginPath();  // outline: the edges between an active patch and an inactive one
    for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) {
      if (!(v(r, c) > 0)) continue;
      const x0 = c * cw, y0 = r * ch, x1 = x0 + cw, y1 = y0 + ch;
      if (!(v(r - 1, c) > 0)) { ctx.moveTo(x0, y0); ctx.lineTo(x1, y0); }
      if (!(v(r + 1, c) > 0)) { ctx.moveTo(x0, y1); ctx.lineTo(x1, y1); }
      if (!(v(r, c - 1) > 0)) { ctx.moveTo(x0, y0); ctx.lineTo(x0, y1); }
      if (!(v(r, c + 1) > 0)) { ctx.moveTo(x1, y0); ctx.lineTo(x1, y1); }
    }
    ctx.lineJoin = 'round';
    ctx.strokeStyle = 'rgba(0,0,0,0.9)'; ctx.lineWidth = 5; ctx.stroke();
    ctx.strokeStyle = '#ffff00'; ctx.lineWidth = 2; ctx.stroke();
  }
  const overlayBox = document.getElementById('show-overlay'), overlayStyle = document.getElementById('overlay-style');
  const mainStyle = () => overlayBox.checked ? overlayStyle.value : 'off';
  const frames = [];  // [canvas, map, fixed style or null, scale]
  function redraw() { for (const [canvas, map, fixed, scale] of frames) drawMap(canvas, map, fixed || mainStyle(), scale); }
  overlayBox.addEventListener('change', redraw);
  overlayStyle.addEventListener('change', redraw);
  function figure(t, caption, fixedStyle, scale) {
    const fig = document.createElement('figure');
    const frame = document.createElement('div'); frame.className = 'frame';
    const a = document.createElement('a'); a.href = t.image; a.title = 'image ' + t.image_id;
    const img = document.createElement('img'); img.alt = 'image ' + t.image_id; img.src = t.image;
    const canvas = document.createElement('canvas');
    canvas.dataset.imageId = t.image_id;
    const entry = [canvas, t.map, fixedStyle, scale];
    frames.push(entry);
    const size = () => { canvas.width = img.naturalWidth * 2 || 320; canvas.height = img.naturalHeight * 2 || 320; drawMap(canvas, t.map, fixedStyle || mainStyle(), scale); canvas.dataset.ready = '1'; };
    if (img.complete && img.naturalWidth) size(); else img.addEventListener('load', size);
    a.appendChild(img); frame.appendChild(a); frame.appendChild(canvas); fig.appendChild(frame);
    const cap = document.createElement('figcaption'); cap.textContent = caption; fig.appendChild(cap);
    return fig;
  }

  if (common.sweep.length === 0) hide('sweep-section');
  for (const s of common.sweep) {
    row('#sweep', [fmt(s.multiple), fmt(s.coefficient), fmt(s.changed_fraction), fmt(s.distinct_fraction),
                   fmt(s.degenerate_fraction), fmt(s.score), s.chosen ? 'yes' : '']);
  }
  if (Number.isNaN(feature)) { document.getElementById('title').textContent = 'No feature given (use feature.html#ID)'; return; }
  if (location.protocol.startsWith('http')) {  // served by `vis-steer-lens serve`: the live page is there
    const live = document.getElementById('live-link'); live.style.display = ''; live.querySelector('a').href = 'live.html#' + feature;
  }
  // Neighbours in the exported feature list (mining may have covered a subset of the SAE).
  const ids = common.features || [], at = ids.indexOf(feature);
  for (const [id, step] of [['prev', -1], ['next', 1]]) {
    const link = document.getElementById(id), other = ids[at + step];
    if (at >= 0 && other !== undefined) link.href = '#' + other; else link.style.visibility = 'hidden';
  }

  const missing = () => { document.getElementById('title').textContent = 'Feature ' + feature + ' is not in this dashboard'; };
  if (at < 0) { missing(); return; }
  window.VSL_FEATURES = undefined;
  const script = document.createElement('script');
  script.src = 'data/features/chunk-' + Math.floor(at / common.meta.features_per_file) + '.js';
  script.onload = () => { const d = (window.VSL_FEATURES || {})[feature]; if (d) show(d); else missing(); };
  script.onerror = missing;
  document.body.appendChild(script);

  function histogram(svg, h) {
    const W = +svg.getAttribute('width'), H = +svg.getAttribute('height'), L = 50, B = 30, T = 8, R = 10;
    const ns = 'http://www.w3.org/2000/svg', max = Math.max(1, ...h.counts), n = h.counts.length;
    const add = (tag, attrs, text) => { const e = document.createElementNS(ns, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = text; svg.appendChild(e); return e; };
    if (!n) { add('text', {x: L, y: H / 2}, 'no activations'); return; }
    const bw = (W - L - R) / n;
    h.counts.forEach((c, i) => {
      const bh = (H - B - T) * c / max;
      const bar = add('rect', {x: L + i * bw, y: H - B - bh, width: Math.max(bw - 1, 1), height: bh, fill: '#2a9d4b', class: 'bar'});
      const t = document.createElementNS(ns, 'title'); t.textContent = 'activation ' + fmt(h.centres[i]) + ': ' + c + ' patches'; bar.appendChild(t);
    });
    add('line', {x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: '#888'});
    add('text', {x: L, y: H - 10, 'font-size': 11}, fmt(h.centres[0] - h.width / 2));
    add('text', {x: W - R, y: H - 10, 'font-size': 11, 'text-anchor': 'end'}, fmt(h.centres[n - 1] + h.width / 2));
    add('text', {x: (W + L) / 2, y: H - 10, 'font-size': 11, 'text-anchor': 'middle'}, 'activation');
    add('text', {x: L - 4, y: T + 10, 'font-size': 11, 'text-anchor': 'end'}, String(max));
    add('text', {x: L - 4, y: H - B, 'font-size': 11, 'text-anchor': 'end'}, '0');
  }

  function show(d) {
    document.title = 'Feature ' + d.feature + ' · vis_steer_lens';
    document.getElementById('title').textContent = 'Feature ' + d.feature + (d.live ? '' : ' (dead)');
    const s = d.stats;
    document.getElementById('meta').textContent = d.sae_id + ' · firing freq ' + fmt(s.frac_nonzero) +
      ' of patches, ' + fmt(s.frac_images) + ' of images · max act ' + fmt(s.max_act) + ' · mean act ' + fmt(s.mean_act) +
      (d.agreement !== null && d.agreement !== undefined ? ' · method agreement ' + fmt(d.agreement) : '');
    if (d.concept) {
      document.getElementById('concept').textContent = 'Ground truth: ' + (d.concept.best_object_concept || d.concept.best_concept) +
        ' (AUROC ' + fmt(d.concept.best_object_auroc ?? d.concept.best_auroc) + (d.concept.clear ? ', clear' : ', not clear') + ')';
    }
    if (d.explanations.length === 0) row('#explanations', ['–', 'no explanations', '', '', '', '']);
    let answers = 0;
    const ordered = d.explanations.slice().sort((a, b) => (b.method === 'steering') - (a.method === 'steering'));
    for (const e of d.explanations) {
      row('#explanations', [e.method_label, e.explanation ?? '', e.flag ?? '', fmt(e.auroc_mean), fmt(e.auroc_max),
                            e.coefficient === null || e.coefficient === undefined ? '' : fmt(e.coefficient)]);
    }
    for (const e of ordered) {
      if (!e.raw_generation) continue;
      const tr = row('#answers', [e.method_label, e.coefficient === null || e.coefficient === undefined ? '' : fmt(e.coefficient), e.raw_generation]);
      tr.lastChild.className = 'answer'; answers++;
    }
    if (answers === 0) hide('answers-section');
    if (!d.sweep_answers || d.sweep_answers.length === 0) hide('sweep-answers-section');
    for (const a of d.sweep_answers || []) {
      const tr = row('#sweep-answers', [fmt(a.multiple) + 'x', fmt(a.coefficient), a.answer ?? '–', a.chosen ? 'chosen' : '']);
      tr.children[2].className = 'answer';
    }
    const scale = d.stats.max_act || null;  // one scale per feature, so its images compare
    const images = document.getElementById('images');
    if (d.top.length === 0) images.textContent = d.stats.max_act === null ? 'No mined images in this run (run mine to see them).' : 'This feature never fired on the mined images.';
    d.top.forEach((t, i) => images.appendChild(figure(t, '#' + (i + 1) + ' · image ' + t.image_id + ' · score ' + fmt(t.score), null, scale)));
    const quantiles = document.getElementById('quantiles');
    for (const q of d.quantiles || []) {
      quantiles.appendChild(figure(q, 'quantile ' + q.quantile + ' · image ' + q.image_id + ' · peak ' + fmt(q.score), null, scale));
    }
    if (!quantiles.children.length) hide('quantiles-section');
    // Top-k saw its images with the inactive patches greyed; the hybrid saw them whole, steered on the active patches.
    const byId = Object.fromEntries(d.top.map(t => [t.image_id, t]));
    const shown = document.getElementById('shown');
    for (const e of d.explanations) {
      if (!Array.isArray(e.image_ids) || e.image_ids.length === 0) continue;
      const masked = e.method === 'topk';
      const h = document.createElement('h3'); h.style.fontSize = '.95em';
      h.textContent = e.method_label + (masked ? ': inactive patches greyed out' : ': whole images, steered on the outlined patches');
      const box = document.createElement('div'); box.className = 'images shown-images'; box.dataset.method = e.method_label;
      for (const id of e.image_ids) if (byId[id]) box.appendChild(figure(byId[id], 'image ' + id, masked ? 'masked' : 'outline', scale));
      shown.appendChild(h); shown.appendChild(box);
    }
    if (!shown.children.length) hide('shown-section');
    const evidence = document.getElementById('evidence');
    for (const e of d.explanations) {
      if (!e.evidence) continue;
      const fig = document.createElement('figure'); fig.className = 'evidence'; fig.dataset.method = e.method_label;
      // One sheet per feature holds every method's band: show this method's band of it.
      const img = document.createElement('div'); img.className = 'evidence-band'; img.setAttribute('role', 'img');
      img.setAttribute('aria-label', 'images generated from "' + (e.explanation ?? '') + '"');
      img.style.width = e.evidence.width + 'px'; img.style.height = e.evidence.height + 'px';
      img.style.background = 'url("' + e.evidence.image + '") 0 ' + (-e.evidence.y) + 'px no-repeat';
      const cap = document.createElement('figcaption');
      cap.textContent = e.method_label + ': "' + (e.explanation ?? '') + '" · peak ' + e.evidence.activations.map(fmt).join(', ');
      fig.appendChild(img); fig.appendChild(cap); evidence.appendChild(fig);
    }
    if (!evidence.children.length) hide('evidence-section');
    const nearest = document.getElementById('nearest');
    for (const [other, cos] of d.nearest || []) {
      const li = document.createElement('li'); const a = document.createElement('a');
      a.href = '#' + other; a.textContent = 'feature ' + other; li.appendChild(a);
      li.appendChild(document.createTextNode(' · cosine ' + fmt(cos))); nearest.appendChild(li);
    }
    if (!nearest.children.length) hide('nearest-section');
    const textSide = document.getElementById('text-side');
    for (const [token, logit] of d.text_side || []) {
      const li = document.createElement('li'); const code = document.createElement('code');
      code.textContent = token; li.appendChild(code); li.appendChild(document.createTextNode(' · ' + fmt(logit)));
      textSide.appendChild(li);
    }
    if (!textSide.children.length) hide('text-side-section');
    const prompts = document.getElementById('prompts');
    for (const label of [...new Set(d.explanations.map(e => e.method_label))]) {
      if (!common.prompts || !common.prompts[label]) continue;
      const det = document.createElement('details'); const sum = document.createElement('summary');
      sum.textContent = label; det.appendChild(sum);
      const p = document.createElement('p'); p.className = 'answer'; p.textContent = common.prompts[label]; det.appendChild(p);
      prompts.appendChild(det);
    }
    if (!prompts.children.length) hide('prompts-section');
    histogram(document.getElementById('histogram'), d.histogram);
    window.VSL_READY = true;
  }
})();
"""


__all__ = [
    "N_NEAREST",
    "PAGE_IMAGE_SIZE",
    "ROWS_PER_PAGE",
    "THUMB_SIZE",
    "DashboardSize",
    "dashboard_size",
    "export_dashboard",
    "nearest_features",
    "read_feature_data",
]
