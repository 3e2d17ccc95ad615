"""``vis-steer-lens serve RUN``: the run's dashboard as a local web app, with live steering.

The app serves the static dashboard of a run folder (:func:`~vis_steer_lens.dashboard.export_dashboard`)
and, beside it, ``live.html``: steer a feature at any coefficient on an empty image of choice and
read the model's answer, compare two features' answers, and upload an image to see each feature's
activation map on it and the top features of a clicked patch.

The model is loaded once. Every model call goes through one :class:`ModelQueue`: a single worker
thread takes every request waiting, groups the steering requests that share a coefficient and an
empty image, and answers each group with one batched :class:`~vis_steer_lens.SteeringExplainer`
call, so a steered answer here is the one ``SteeringExplainer`` gives at that coefficient.

Endpoints (JSON unless said):

    GET  /api/info          the run: features, the run's coefficient, empty images, d_sae
    POST /api/steer         {"feature", "coefficient", "empty_image"} -> the steered answer
    POST /api/steer/stream  the same, streamed as it is decoded: newline-delimited JSON, one
                            {"text": answer so far} per token, then {"done": true, ...the answer}
                            (or {"error": ...})
    POST /api/compare       {"features": [a, b], "coefficient", "empty_image"} -> both answers
    POST /api/activations   multipart "image" -> the image's patch grid, its top features with
                            their maps, and each patch's top features

Needs the ``serve`` extra (``pip install 'vis_steer_lens[serve]'``: starlette, uvicorn,
python-multipart). Binds 127.0.0.1 by default: the app runs a model for whoever reaches it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import queue
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from vis_steer_lens.choices import EMPTY_IMAGES

#: Pip extra that ``serve`` needs, as the one-line error says.
SERVE_EXTRA = "pip install 'vis_steer_lens[serve]' (starlette, uvicorn, python-multipart)"
#: Features listed for an uploaded image, and per clicked patch.
TOP_UPLOAD_FEATURES = 16
TOP_PATCH_FEATURES = 5


class ServeError(ValueError):
    """A request or a setting the app cannot honour; the message says what to send instead."""


def require_web_stack() -> None:
    """Raise :class:`ImportError` with one line naming the extra when the web stack is missing."""
    missing = []
    for module in ("starlette", "uvicorn", "python_multipart"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ImportError(f"`vis-steer-lens serve` needs {', '.join(missing)}: {SERVE_EXTRA}.")


class ModelQueue:
    """One worker thread that runs every model call, batching the steering requests.

    Args:
        vlm: The subject :class:`~vis_steer_lens.HookedVLM`.
        sae: The run's SAE.
        prompt: The prompt preset of the run's steering explanations.
        max_batch: Most requests taken in one round.
        max_new_tokens: Longest steered answer, in tokens (``SteeringExplainer``'s default).
    """

    def __init__(
        self, vlm: Any, sae: Any, *, prompt: str = "default", max_batch: int = 16, max_new_tokens: int = 48
    ):
        self.vlm, self.sae, self.prompt = vlm, sae, prompt
        self.max_batch, self.max_new_tokens = max_batch, max_new_tokens
        self.batches: list[int] = []  # size of each steering batch run (for tests and logs)
        self._explainers: dict[tuple[float, str], Any] = {}
        self._queue: queue.Queue = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="vis-steer-lens-model", daemon=True)
        self._worker.start()

    def steer(
        self,
        feature: int,
        coefficient: float,
        empty_image: str,
        on_text: Callable[[str], None] | None = None,
    ) -> Future:
        """Queue one steered answer; the future's result is ``SteeringExplainer``'s row as a dict.

        ``on_text``, when given, is called from the worker thread with the answer decoded so far
        after every token (``SteeringExplainer.explain``'s ``on_text``), before the future settles.
        """
        feature, coefficient = self._check_feature(feature), float(coefficient)
        if not math.isfinite(coefficient):
            raise ServeError(f"coefficient must be a finite number, got {coefficient!r}.")
        if empty_image not in EMPTY_IMAGES:
            raise ServeError(f"empty_image must be one of {', '.join(EMPTY_IMAGES)}; got {empty_image!r}.")
        future: Future = Future()
        self._queue.put(("steer", (feature, coefficient, empty_image, on_text), future))
        return future

    def activations(self, image: Image.Image) -> Future:
        """Queue an image; the future's result is its feature map (see :meth:`_activations`)."""
        future: Future = Future()
        self._queue.put(("activations", image, future))
        return future

    def close(self) -> None:
        """Stop the worker after the requests already queued."""
        self._queue.put(None)
        self._worker.join(timeout=30)

    def _check_feature(self, feature: Any) -> int:
        d_sae = int(self.sae.cfg.d_sae)
        if isinstance(feature, bool) or not isinstance(feature, int) or not 0 <= feature < d_sae:
            raise ServeError(f"feature must be an integer from 0 to {d_sae - 1}; got {feature!r}.")
        return feature

    def _explainer(self, coefficient: float, empty_image: str) -> Any:
        from vis_steer_lens.explain.steering import SteeringExplainer

        key = (coefficient, empty_image)
        if key not in self._explainers:
            if len(self._explainers) > 64:  # a slider makes many coefficients; keep the cache small
                self._explainers.clear()
            self._explainers[key] = SteeringExplainer(
                self.vlm,
                self.sae,
                coefficient=coefficient,
                empty_image=empty_image,
                prompt=self.prompt,
                max_new_tokens=self.max_new_tokens,
            )
        return self._explainers[key]

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            items = [item]
            while len(items) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this round
                    break
                items.append(more)
            groups: dict[tuple[float, str], list[tuple[int, Future, Callable[[str], None] | None]]] = {}
            for kind, payload, future in items:
                if kind == "activations":
                    self._settle(future, self._activations, payload)
                else:
                    feature, coefficient, empty_image, on_text = payload
                    groups.setdefault((coefficient, empty_image), []).append((feature, future, on_text))
            for (coefficient, empty_image), requests in groups.items():
                features = list(dict.fromkeys(f for f, _, _ in requests))
                listeners: dict[int, list[Callable[[str], None]]] = {}
                for feature, _, on_text in requests:
                    if on_text is not None:
                        listeners.setdefault(feature, []).append(on_text)
                try:
                    explainer = self._explainer(coefficient, empty_image)
                    frame = explainer.explain(
                        features,
                        progress=False,
                        on_text=_fan_out(listeners) if listeners else None,
                    )
                    self.batches.append(len(features))
                    rows = {int(r["feature"]): r for r in frame.to_dict("records")}
                except Exception as err:  # noqa: BLE001 - every waiting request gets the error
                    for _, future, _ in requests:
                        future.set_exception(err)
                    continue
                for feature, future, _ in requests:
                    row = rows[feature]
                    future.set_result(
                        {
                            "feature": feature,
                            "coefficient": coefficient,
                            "empty_image": empty_image,
                            "explanation": row.get("explanation"),
                            "raw_generation": row.get("raw_generation"),
                            "flag": row.get("flag") if isinstance(row.get("flag"), str) else None,
                        }
                    )

    @staticmethod
    def _settle(future: Future, fn: Any, *args: Any) -> None:
        try:
            future.set_result(fn(*args))
        except Exception as err:  # noqa: BLE001 - handed to the request
            future.set_exception(err)

    @torch.no_grad()
    def _activations(self, image: Image.Image) -> dict[str, Any]:
        """The SAE's features on one image: its grid, the top features with their maps, and each
        patch's top features."""
        from vis_steer_lens.activations import image_feature_maps, image_processor_of
        from vis_steer_lens.saes.validation import check_sae_fits

        hook = check_sae_fits(self.sae, self.vlm)
        # The image at its own grid: fixed-grid towers resize it, native-resolution ones keep its shape.
        codes, grids = image_feature_maps(
            self.vlm, self.sae, hook, [image.convert("RGB")], image_processor_of(self.vlm)
        )
        acts, (rows, cols) = codes[0].float().cpu(), grids[0]  # [patches, d_sae]
        peak = acts.amax(dim=0)
        top = [int(f) for f in peak.argsort(descending=True)[:TOP_UPLOAD_FEATURES] if peak[f] > 0]
        values, indices = acts.topk(min(TOP_PATCH_FEATURES, acts.shape[1]), dim=1)
        return {
            "grid": [rows, cols],
            "features": [
                {
                    "feature": f,
                    "max": round(float(peak[f]), 4),
                    "map": [
                        [round(float(v), 3) for v in row] for row in acts[:, f].reshape(rows, cols).tolist()
                    ],
                }
                for f in top
            ],
            "patches": [
                [[int(i), round(float(v), 4)] for i, v in zip(idx, val, strict=True) if v > 0]
                for idx, val in zip(indices.tolist(), values.tolist(), strict=True)
            ],
        }


def _fan_out(listeners: dict[int, list[Callable[[str], None]]]) -> Callable[[int, str], None]:
    """An ``on_text(feature, text)`` that hands the text to every request streaming that feature."""

    def on_text(feature: int, text: str) -> None:
        for listen in listeners.get(feature, ()):
            listen(text)

    return on_text


def run_prompt(run_dir: str | Path) -> str:
    """The prompt preset the run's steering explanations used (``"default"`` when none is recorded)."""
    from vis_steer_lens.runs import RunFolder

    frame = RunFolder(run_dir).explanations()
    if frame is not None and "prompt_id" in frame:
        steering = frame[(frame["method"] == "steering") & frame["prompt_id"].notna()]
        if len(steering):
            return str(steering["prompt_id"].iloc[0])
    return "default"


def create_app(
    run_dir: str | Path,
    vlm: Any,
    sae: Any,
    *,
    dashboard_dir: str | Path | None = None,
    prompt: str | None = None,
    max_batch: int = 16,
) -> Any:
    """The web app of a run folder and its model.

    Args:
        run_dir: The run folder (its dashboard is exported on start when ``dashboard_dir`` is not given).
        vlm: The run's subject model, loaded.
        sae: The run's SAE; refused when it is not the run's (by its identity).
        dashboard_dir: A dashboard already exported from the run; ``None`` exports one to a
            temporary folder.
        prompt: The steering prompt preset (default: the run's, :func:`run_prompt`).
        max_batch: Most requests answered in one batch.

    Returns:
        A Starlette application (run it with uvicorn); ``app.state.queue`` is its :class:`ModelQueue`.

    Raises:
        ImportError: The ``serve`` extra is not installed.
        ServeError: The SAE is not the one the run was made with.
    """
    require_web_stack()
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from vis_steer_lens.dashboard import export_dashboard
    from vis_steer_lens.dashboard.results import DashboardResults
    from vis_steer_lens.saes.metadata import sae_identity

    results = DashboardResults.load(run_dir)
    if results.sae_id is not None and sae_identity(sae) != results.sae_id:
        raise ServeError(
            f"The SAE given is {sae_identity(sae)!r} but the run {str(run_dir)!r} was made with "
            f"{results.sae_id!r}; pass the run's SAE (--sae) and model (--model)."
        )
    if dashboard_dir is None:
        dashboard_dir = Path(tempfile.mkdtemp(prefix="vis-steer-lens-serve-"))
        export_dashboard(run_dir, dashboard_dir, sae=sae)
    from vis_steer_lens.runs import RunFolder

    choice = RunFolder(run_dir).coefficient()
    model_queue = ModelQueue(vlm, sae, prompt=prompt or run_prompt(run_dir), max_batch=max_batch)

    async def wait(future: Future) -> Any:
        import asyncio

        return await asyncio.wrap_future(future)

    def bad(err: Exception) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=400)

    async def info(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "sae_id": results.sae_id,
                "d_sae": int(sae.cfg.d_sae),
                "features": results.features,
                "coefficient": choice.coefficient if choice is not None else None,
                "empty_image": choice.empty_image if choice is not None else "white",
                "empty_images": list(EMPTY_IMAGES),
                "prompt": model_queue.prompt,
            }
        )

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError as err:
            raise ServeError("Send a JSON object.") from err
        if not isinstance(data, dict):
            raise ServeError("Send a JSON object.")
        return data

    async def steer(request: Request) -> JSONResponse:
        try:
            data = await body(request)
            future = model_queue.steer(
                data.get("feature"), data.get("coefficient", math.nan), data.get("empty_image", "white")
            )
        except (ServeError, TypeError, ValueError) as err:
            return bad(err)
        return JSONResponse(await wait(future))

    async def steer_stream(request: Request) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue = asyncio.Queue()

        def push(item: dict[str, Any] | None) -> None:  # from the worker thread
            loop.call_soon_threadsafe(chunks.put_nowait, item)

        try:
            data = await body(request)
            future = model_queue.steer(
                data.get("feature"),
                data.get("coefficient", math.nan),
                data.get("empty_image", "white"),
                on_text=lambda text: push({"text": text}),
            )
        except (ServeError, TypeError, ValueError) as err:
            return bad(err)
        future.add_done_callback(lambda _: push(None))

        async def lines() -> AsyncIterator[str]:
            while (item := await chunks.get()) is not None:
                yield json.dumps(item) + "\n"
            err = future.exception()
            yield (
                json.dumps({"error": str(err)} if err is not None else {"done": True, **future.result()})
                + "\n"
            )

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def compare(request: Request) -> JSONResponse:
        try:
            data = await body(request)
            features = data.get("features")
            if not isinstance(features, list) or len(features) != 2:
                raise ServeError(f"features must be a list of two feature ids; got {features!r}.")
            futures = [
                model_queue.steer(f, data.get("coefficient", math.nan), data.get("empty_image", "white"))
                for f in features
            ]
        except (ServeError, TypeError, ValueError) as err:
            return bad(err)
        return JSONResponse([await wait(f) for f in futures])

    async def activations(request: Request) -> JSONResponse:
        form = await request.form()
        upload = form.get("image")
        if upload is None or not hasattr(upload, "read"):
            return bad(ServeError("Send the image as the multipart field 'image'."))
        try:
            image = Image.open(io.BytesIO(await upload.read()))
            image.load()
        except (UnidentifiedImageError, OSError) as err:
            return bad(ServeError(f"The upload is not an image PIL can read ({err})."))
        try:
            return JSONResponse(await wait(model_queue.activations(image)))
        except ServeError as err:
            return bad(err)

    async def live(request: Request) -> HTMLResponse:
        return HTMLResponse(LIVE_PAGE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        yield
        model_queue.close()

    app = Starlette(
        routes=[
            Route("/api/info", info),
            Route("/api/steer", steer, methods=["POST"]),
            Route("/api/steer/stream", steer_stream, methods=["POST"]),
            Route("/api/compare", compare, methods=["POST"]),
            Route("/api/activations", activations, methods=["POST"]),
            Route("/live.html", live),
            Mount("/", StaticFiles(directory=str(dashboard_dir), html=True)),
        ],
        lifespan=lifespan,
    )
    app.state.queue = model_queue
    app.state.dashboard_dir = Path(dashboard_dir)
    return app


def serve(app: Any, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run ``app`` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning")


LIVE_PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Live steering · vis_steer_lens</title>
<link rel="icon" href="data:,">
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1100px; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.4em; }
.row { display: flex; gap: 1em; align-items: center; flex-wrap: wrap; margin: .4em 0; }
.answer { white-space: pre-wrap; font-family: ui-monospace, monospace; background: #f6f6f6; padding: .5em; min-height: 1.5em; }
.busy { color: #999; } #coefficient { width: 28em; }
#upload-frame { position: relative; display: inline-block; line-height: 0; }
#upload-frame img { width: 320px; height: 320px; object-fit: fill; }
#upload-frame canvas { position: absolute; left: 0; top: 0; width: 100%; height: 100%; cursor: crosshair; }
li.on { font-weight: bold; } li { cursor: pointer; }
</style></head>
<body>
<p><a href="index.html">&larr; all features</a></p>
<h1>Live steering</h1>
<div class="meta" id="meta"></div>
<h2>Steer a feature</h2>
<div class="row">
  <label>feature <input id="feature" type="number" min="0" value="0" style="width:6em"></label>
  <label>empty image <select id="empty-image"></select></label>
</div>
<div class="row"><label>coefficient <input id="coefficient" type="range" min="0" step="any"></label>
  <span id="coefficient-value"></span></div>
<div id="answer" class="answer"></div>
<h2>Compare two features</h2>
<div class="row"><label>feature A <input id="feature-a" type="number" min="0" value="0" style="width:6em"></label>
  <label>feature B <input id="feature-b" type="number" min="0" value="1" style="width:6em"></label>
  <button id="compare">steer both</button></div>
<div class="row" style="align-items: stretch"><div id="answer-a" class="answer" style="flex:1"></div><div id="answer-b" class="answer" style="flex:1"></div></div>
<h2>An image of your own</h2>
<div class="row"><input id="upload" type="file" accept="image/*"></div>
<div class="row" style="align-items: flex-start">
  <div id="upload-frame"><img id="upload-image" alt="uploaded image"><canvas id="upload-canvas" width="640" height="640"></canvas></div>
  <div><b>Top features</b> (click one for its map)<ol id="upload-features"></ol></div>
  <div><b>Clicked patch</b> <span id="patch-label"></span><ol id="patch-features"></ol></div>
</div>
<script>
(async function () {
  const $ = id => document.getElementById(id);
  const info = await (await fetch('api/info')).json();
  $('meta').textContent = info.sae_id + ' · d_sae ' + info.d_sae + ' · prompt ' + info.prompt;
  $('feature').value = info.features[0] ?? 0; $('feature').max = info.d_sae - 1;
  if (location.hash) $('feature').value = parseInt(location.hash.slice(1), 10);
  for (const e of info.empty_images) { const o = document.createElement('option'); o.value = o.textContent = e; $('empty-image').appendChild(o); }
  $('empty-image').value = info.empty_image;
  const base = info.coefficient || 1;
  const slider = $('coefficient'); slider.max = 4 * base; slider.step = base / 20; slider.value = base;
  const showValue = () => { $('coefficient-value').textContent = Number(slider.value).toPrecision(4) + (info.coefficient ? ' (' + (slider.value / base).toFixed(2) + 'x the run\'s)' : ''); };
  showValue();
  let latest = 0;
  async function post(url, payload) {
    const r = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(payload)});
    const d = await r.json(); if (!r.ok) throw new Error(d.error); return d;
  }
  async function steer() {
    const ticket = ++latest, c = Number(slider.value);
    $('answer').classList.add('busy'); $('answer').textContent = 'steering feature ' + $('feature').value + ' at ' + c.toPrecision(4) + '…';
    try {
      // The answer streams in token by token (newline-delimited JSON), then the whole row.
      const r = await fetch('api/steer/stream', {method: 'POST', headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({feature: parseInt($('feature').value, 10), coefficient: c, empty_image: $('empty-image').value})});
      if (!r.ok) throw new Error((await r.json()).error);
      const reader = r.body.getReader(), decoder = new TextDecoder();
      let buffer = '', d = null, updates = 0;
      while (d === null) {
        const {value, done} = await reader.read();
        buffer += decoder.decode(value || new Uint8Array(), {stream: !done});
        let cut;
        while ((cut = buffer.indexOf('\n')) >= 0) {
          const item = JSON.parse(buffer.slice(0, cut)); buffer = buffer.slice(cut + 1);
          if (item.error) throw new Error(item.error);
          if (item.done) { d = item; break; }
          if (ticket === latest) { $('answer').textContent = item.text; $('answer').dataset.updates = ++updates; }
        }
        if (done && d === null) throw new Error('the answer stream ended early');
      }
      if (ticket !== latest) return;  // a newer slider position is on its way
      $('answer').textContent = d.explanation + (d.flag ? '  [' + d.flag + ']' : '') + '\n\n' + d.raw_generation;
      $('answer').dataset.coefficient = d.coefficient; $('answer').dataset.feature = d.feature;
      $('answer').dataset.explanation = d.explanation;
    } catch (err) { if (ticket === latest) $('answer').textContent = 'error: ' + err.message; }
    $('answer').classList.remove('busy');
  }
  slider.addEventListener('input', showValue);
  for (const el of [slider, $('feature'), $('empty-image')]) el.addEventListener('change', steer);
  $('compare').addEventListener('click', async () => {
    $('answer-a').textContent = $('answer-b').textContent = '…';
    try {
      const [a, b] = await post('api/compare', {features: [parseInt($('feature-a').value, 10), parseInt($('feature-b').value, 10)],
                                                coefficient: Number(slider.value), empty_image: $('empty-image').value});
      $('answer-a').textContent = 'feature ' + a.feature + ': ' + a.explanation; $('answer-b').textContent = 'feature ' + b.feature + ': ' + b.explanation;
    } catch (err) { $('answer-a').textContent = 'error: ' + err.message; $('answer-b').textContent = ''; }
  });
  let upload = null, shown = null;
  function draw() {
    const c = $('upload-canvas'), ctx = c.getContext('2d');
    ctx.clearRect(0, 0, c.width, c.height);
    if (!upload || shown === null) return;
    const f = upload.features.find(x => x.feature === shown); if (!f) return;
    const [h, w] = upload.grid, cw = c.width / w, ch = c.height / h;
    for (let r = 0; r < h; r++) for (let q = 0; q < w; q++) {
      const a = 0.7 * (1 - Math.min(Math.max(f.map[r][q], 0) / (f.max || 1), 1));
      if (a > 0.001) { ctx.fillStyle = 'rgba(0,0,0,' + a.toFixed(3) + ')'; ctx.fillRect(q * cw, r * ch, cw + 0.5, ch + 0.5); }
    }
    c.dataset.feature = shown;
  }
  function choose(feature) {
    shown = feature; draw();
    for (const li of $('upload-features').children) li.classList.toggle('on', Number(li.dataset.feature) === feature);
  }
  $('upload').addEventListener('change', async () => {
    const file = $('upload').files[0]; if (!file) return;
    $('upload-image').src = URL.createObjectURL(file);
    const form = new FormData(); form.append('image', file);
    const r = await fetch('api/activations', {method: 'POST', body: form}), d = await r.json();
    $('upload-features').textContent = '';
    if (!r.ok) { $('upload-features').textContent = 'error: ' + d.error; return; }
    upload = d;
    for (const f of d.features) {
      const li = document.createElement('li'); li.dataset.feature = f.feature;
      li.textContent = 'feature ' + f.feature + ' · max ' + f.max; li.addEventListener('click', () => choose(f.feature));
      $('upload-features').appendChild(li);
    }
    choose(d.features.length ? d.features[0].feature : null);
    $('upload-canvas').dataset.ready = '1';
  });
  $('upload-canvas').addEventListener('click', ev => {
    if (!upload) return;
    const box = ev.target.getBoundingClientRect(), [h, w] = upload.grid;
    const r = Math.min(h - 1, Math.floor((ev.clientY - box.top) / box.height * h)), q = Math.min(w - 1, Math.floor((ev.clientX - box.left) / box.width * w));
    $('patch-label').textContent = 'row ' + r + ', column ' + q;
    $('patch-features').textContent = '';
    for (const [f, v] of upload.patches[r * w + q]) {
      const li = document.createElement('li'); li.dataset.feature = f; li.textContent = 'feature ' + f + ' · ' + v;
      $('patch-features').appendChild(li);
    }
  });
  window.VSL_LIVE_READY = true;
  steer();
})();
</script>
</body></html>
"""


__all__ = [
    "SERVE_EXTRA",
    "ModelQueue",
    "ServeError",
    "create_app",
    "require_web_stack",
    "run_prompt",
    "serve",
]
