"""Activation cache: shards equal whatever kills, resumes and ranks came between; rows equal the tower's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vis_steer_lens import toy
from vis_steer_lens.activations import image_processor_of, image_token_activations
from vis_steer_lens.distributed import World
from vis_steer_lens.hook_names import UnknownHookNameError
from vis_steer_lens.saes import cache as cache_module
from vis_steer_lens.saes.cache import ActivationCache, ActivationCacheError, cache_activations
from vis_steer_lens.store import ResumeMismatchError
from vis_steer_lens.testing import tiny_vlm
from vis_steer_lens.toy import ToyImages

HOOKS = ["blocks.2.hook_resid_post", "blocks.1.hook_resid_post"]
SETTINGS = dict(images_per_shard=7, batch_size=3, progress=False)


@pytest.fixture(scope="module")
def vlm():
    return toy.load().vlm


@pytest.fixture(scope="module")
def images():
    return ToyImages(seed=5, n=30)


@pytest.fixture(scope="module")
def uninterrupted(vlm, images, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "activations"
    return cache_activations(vlm, HOOKS, images, out, **SETTINGS)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("shard-*.npy"))}


def test_rows_are_the_towers_tokens_in_image_order(vlm, images, uninterrupted):
    cache = uninterrupted
    assert cache.manifest["complete"] and cache.manifest["images_done"] == 30
    assert [entry["images"] for entry in cache.shards] == [[0, 7], [7, 14], [14, 21], [21, 28], [28, 30]]
    assert cache.manifest["tower_fingerprint"] == vlm.vision.tower_fingerprint()
    assert cache.manifest["token_selection"] == "patches" and cache.manifest["d_model"][HOOKS[0]] == 128
    for hook in HOOKS:  # both from one forward as far as the deeper hook
        rows = np.concatenate([np.asarray(cache.rows(hook, e["shard"])) for e in cache.shards])
        expected, _ = image_token_activations(vlm, hook, list(images), image_processor_of(vlm), "patches")
        torch.testing.assert_close(torch.from_numpy(rows), torch.cat(expected), rtol=1e-5, atol=1e-4)
    index = np.concatenate([np.asarray(cache.index(e["shard"])) for e in cache.shards])
    assert index[:, 0].tolist() == [i for i in range(30) for _ in range(16)]
    assert index[:16, 1].tolist() == list(range(16))
    assert isinstance(cache.rows(HOOKS[0], 0), np.memmap)  # read through a memory map


def test_a_killed_cache_resumes_to_the_same_bytes(vlm, images, uninterrupted, tmp_path, monkeypatch):
    out = tmp_path / "activations"
    real = cache_module._shard_activations
    calls = {"n": 0}

    def dies_on_the_third_shard(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_module, "_shard_activations", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        cache_activations(vlm, HOOKS, images, out, **SETTINGS)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["shard"] for e in manifest["shards"]] == [0, 1] and not manifest["complete"]
    monkeypatch.setattr(cache_module, "_shard_activations", real)

    resumed_calls = []
    monkeypatch.setattr(
        cache_module,
        "_shard_activations",
        lambda *a, **k: resumed_calls.append(a[3]) or real(*a, **k),
    )
    resumed = cache_activations(vlm, HOOKS, images, out, **SETTINGS)
    assert [block.start for block in resumed_calls] == [14, 21, 28]  # only the missing shards ran
    assert _files(out) == _files(uninterrupted.root)
    assert resumed.manifest["shards"] == uninterrupted.manifest["shards"]


def test_two_ranks_write_the_same_shards_as_one(vlm, images, uninterrupted, tmp_path, monkeypatch):
    # Two ranks in one process: rank 0 runs, and where it waits for the others after its shards
    # (its third barrier), rank 1 runs whole, its own barriers passing at once.
    out = tmp_path / "activations"
    written = []
    real = cache_module._shard_activations
    monkeypatch.setattr(
        cache_module, "_shard_activations", lambda *a, **k: written.append(a[3].start) or real(*a, **k)
    )
    barriers = {"rank 0": 0}
    rank_1 = {}

    def barrier(world):
        if world.rank == 0:
            barriers["rank 0"] += 1
            if barriers["rank 0"] == 3:
                rank_1["cache"] = cache_activations(
                    vlm, HOOKS, images, out, world=World(rank=1, size=2), **SETTINGS
                )

    monkeypatch.setattr(cache_module, "barrier", barrier)
    merged = cache_activations(vlm, HOOKS, images, out, world=World(rank=0, size=2), **SETTINGS)
    assert written == [0, 14, 28, 7, 21]  # rank 0 takes shards 0, 2, 4; rank 1 shards 1, 3
    assert _files(out) == _files(uninterrupted.root)
    assert merged.manifest["shards"] == uninterrupted.manifest["shards"] and merged.manifest["complete"]
    assert rank_1["cache"].n_rows == uninterrupted.n_rows


def test_other_settings_are_refused_on_resume(vlm, images, uninterrupted):
    with pytest.raises(ResumeMismatchError, match="images_per_shard"):
        cache_activations(
            vlm, HOOKS, images, uninterrupted.root, images_per_shard=8, batch_size=3, progress=False
        )


def test_bad_inputs_say_what_to_do(vlm, images, uninterrupted, tmp_path):
    with pytest.raises(UnknownHookNameError, match="blocks.9"):
        cache_activations(vlm, ["blocks.9.hook_resid_post"], images, tmp_path / "a", progress=False)
    with pytest.raises(ActivationCacheError, match="tokens must be one of"):
        cache_activations(vlm, HOOKS, images, tmp_path / "a", tokens="cls", progress=False)
    with pytest.raises(ActivationCacheError, match="at least one"):
        cache_activations(vlm, [], images, tmp_path / "a", progress=False)
    with pytest.raises(ActivationCacheError, match="run `vis-steer-lens cache` first"):
        ActivationCache.open(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "manifest.json").write_text(json.dumps({"version": 1, "hooks": HOOKS, "shards": []}))
    with pytest.raises(ActivationCacheError, match="holds no rows"):
        ActivationCache.open(empty)
    with pytest.raises(ActivationCacheError, match="not in the activation cache"):
        uninterrupted.check_hook("blocks.0.hook_resid_post")


@pytest.mark.parametrize(("family", "tokens"), [("internvl3", "prefix"), ("qwen2_vl", "all")])
def test_tiny_families_cache_their_selected_tokens(family, tokens, tmp_path):
    vlm = tiny_vlm(family, vision_layers=1)
    pictures = [torch.randint(0, 256, (3, 28 + 14 * i, 28), dtype=torch.uint8) for i in range(3)]
    cache = cache_activations(
        vlm,
        ["blocks.0.hook_resid_post"],
        pictures,
        tmp_path,
        tokens=tokens,
        images_per_shard=2,
        progress=False,
    )
    expected, _ = image_token_activations(
        vlm, "blocks.0.hook_resid_post", pictures, image_processor_of(vlm), tokens
    )
    rows = np.concatenate(
        [np.asarray(cache.rows("blocks.0.hook_resid_post", e["shard"])) for e in cache.shards]
    )
    assert rows.shape[0] == sum(len(e) for e in expected)
    torch.testing.assert_close(
        torch.from_numpy(rows), torch.cat(expected).float().cpu(), rtol=1e-4, atol=1e-4
    )
