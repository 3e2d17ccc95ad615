"""`vis-steer-lens serve`: the run's dashboard as a web app over the toy world, with live steering.

The browser part drives Debian's chromium through Playwright as the static dashboard's tests do
(skipped without it locally, required under ``VSL_REQUIRE_BROWSER``).
"""

from __future__ import annotations

import socket
import sys
import threading
import time

import pytest

from vis_steer_lens.cli import main

starlette = pytest.importorskip("starlette", reason="the serve extra: pip install 'vis_steer_lens[serve]'")
FEATURES = list(range(24))


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """The toy world's model and SAE, and a run folder with 24 of its features mined on 64 images."""
    from vis_steer_lens import toy
    from vis_steer_lens.mining import mine_top_activations
    from vis_steer_lens.toy import ToyImages

    bundle = toy.load()
    root = tmp_path_factory.mktemp("serve-run")
    mine_top_activations(
        bundle.vlm,
        bundle.sae,
        ToyImages(seed=1, n=64),
        k=3,
        batch_size=32,
        features=FEATURES,
        out_dir=root / "mined",
        progress=False,
    )
    return root, bundle


@pytest.fixture(scope="module")
def server(toy_run):
    import uvicorn

    from vis_steer_lens.serve import create_app

    root, bundle = toy_run
    app = create_app(root, bundle.vlm, bundle.sae, prompt="toy")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not instance.started and time.time() < deadline:
        time.sleep(0.05)
    assert instance.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}/", app
    instance.should_exit = True
    thread.join(timeout=10)


def _steered(bundle, feature: int, coefficient: float, empty_image: str = "white") -> str:
    from vis_steer_lens.explain.steering import SteeringExplainer

    explainer = SteeringExplainer(
        bundle.vlm, bundle.sae, coefficient=coefficient, empty_image=empty_image, prompt="toy"
    )
    return explainer.explain([feature], progress=False)["explanation"].iloc[0]


def test_queue_batches_waiting_requests_and_matches_the_explainer(toy_run):
    from vis_steer_lens.serve import ModelQueue, ServeError

    _, bundle = toy_run
    queue = ModelQueue(bundle.vlm, bundle.sae, prompt="toy")
    try:
        futures = [queue.steer(f, 40.0, "white") for f in (3, 5, 3, 7)]
        answers = [f.result(timeout=120) for f in futures]
        assert answers[0]["explanation"] == answers[2]["explanation"]  # the same feature, the same answer
        assert answers[1]["explanation"] == _steered(bundle, 5, 40.0)
        # Requests that wait while the model works are answered together, each feature once.
        assert len(queue.batches) <= 2 and max(queue.batches) >= 2, queue.batches
        with pytest.raises(ServeError, match="feature must be an integer"):
            queue.steer(10**9, 1.0, "white")
        with pytest.raises(ServeError, match="empty_image must be one of"):
            queue.steer(1, 1.0, "purple")
    finally:
        queue.close()


def test_refuses_another_sae(toy_run):
    from conftest import random_sae

    from vis_steer_lens.serve import ServeError, create_app

    root, bundle = toy_run
    other = random_sae(d_in=bundle.sae.cfg.d_in, d_sae=16, hook_name="blocks.1.hook_resid_post")
    with pytest.raises(ServeError, match="was made with"):
        create_app(root, bundle.vlm, other)


def test_serve_without_the_extra_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", str(tmp_path)])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert message.startswith("error: ") and "uvicorn" in message and "vis_steer_lens[serve]" in message
    assert message.count("\n") == 1  # one line


@pytest.fixture
def page(browser, server):
    """A page that may reach the app on loopback and nothing else; it fails on any console error."""
    url, _ = server
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.route(
        "http*://**",
        lambda route: (
            route.continue_()
            if route.request.url.startswith(url)
            else (errors.append(f"network request: {route.request.url}"), route.abort())
        ),
    )
    yield page
    context.close()
    assert errors == [], errors


def test_live_steering_and_upload_in_the_browser(page, server, toy_run, tmp_path):
    url, app = server
    _, bundle = toy_run
    page.goto(url)  # the dashboard itself
    page.wait_for_function("window.VSL_READY === true")
    assert page.locator("#rows tr").count() > 0

    page.goto(url + "live.html#4")
    page.wait_for_function("window.VSL_LIVE_READY === true")
    page.wait_for_function("document.getElementById('answer').dataset.coefficient !== undefined")
    first = page.locator("#answer").get_attribute("data-explanation")
    coefficient = 60.0
    page.evaluate(
        "c => { const s = document.getElementById('coefficient'); s.max = Math.max(s.max, 2 * c); s.value = c;"
        " s.dispatchEvent(new Event('change')); }",
        coefficient,
    )
    page.wait_for_function(f"Number(document.getElementById('answer').dataset.coefficient) === {coefficient}")
    answer = page.locator("#answer").get_attribute("data-explanation")
    assert answer == _steered(bundle, 4, coefficient)
    assert int(page.locator("#answer").get_attribute("data-updates")) >= 1  # it streamed in
    assert first is not None  # the answer at the run's (here default) coefficient came first

    page.fill("#feature-a", "4")
    page.fill("#feature-b", "9")
    page.click("#compare")
    page.wait_for_function("document.getElementById('answer-b').textContent.startsWith('feature 9')")
    assert page.locator("#answer-a").inner_text() == f"feature 4: {answer}"

    from vis_steer_lens.toy import ToyImages

    image = ToyImages(seed=2, n=1)[0]
    image = image[0] if isinstance(image, tuple) else image
    path = tmp_path / "upload.png"
    image.save(path)
    page.set_input_files("#upload", str(path))
    page.wait_for_function("document.getElementById('upload-canvas').dataset.ready === '1'")
    assert page.locator("#upload-features li").count() > 0
    drawn = page.evaluate(
        "() => { const c = document.getElementById('upload-canvas'); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0;"
        " return [n, d.length / 4, c.dataset.feature]; }"
    )
    assert 0 < drawn[0] < drawn[1] and drawn[2] is not None  # the map shades part of the image, not all
    page.locator("#upload-canvas").click(position={"x": 160, "y": 160})
    assert page.locator("#patch-label").inner_text().startswith("row ")


def test_the_answer_streams_token_by_token(server, toy_run):
    import json
    import urllib.error
    import urllib.request

    url, _ = server
    _, bundle = toy_run
    request = urllib.request.Request(
        url + "api/steer/stream",
        data=json.dumps({"feature": 9, "coefficient": 400.0, "empty_image": "white"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.headers["Content-Type"].startswith("application/x-ndjson")
        items = [json.loads(line) for line in response.read().decode().splitlines()]
    *partial, last = items
    assert last["done"] is True and last["explanation"] == _steered(bundle, 9, 400.0)
    texts = [item["text"] for item in partial]
    assert len(texts) >= 2 and texts[-1] == last["raw_generation"]  # more than one token came, in order
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    bad = urllib.request.Request(
        url + "api/steer/stream", data=b'{"feature": -1}', headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=30)
    assert err.value.code == 400 and "feature must be an integer" in json.loads(err.value.read())["error"]
