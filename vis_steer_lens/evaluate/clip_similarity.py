"""CLIP-style similarity between each explanation and its feature's (masked) top images.

The second evaluator family of the paper's code (CLIP ViT-L/14 there). Any transformers dual encoder
with ``get_text_features`` / ``get_image_features`` works (CLIP, SigLIP, SigLIP 2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from vis_steer_lens.evaluate.metrics import bootstrap_mean_ci, method_label

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"


def _embedding(output: Any) -> torch.Tensor:
    # transformers 5 returns a ModelOutput whose pooler_output holds the projected embedding.
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise TypeError(f"Cannot find an embedding in a {type(output).__name__}.")
    return pooled


class ClipSimilarityScorer:
    """Mean cosine similarity between an explanation and its feature's top images.

    Args:
        model: A hub id / folder (loaded with ``AutoModel`` and ``AutoProcessor``), or a
            ``(model, processor)`` pair already in memory.
        device: Where the model runs; its current device when None.
        batch_size: Texts or images per forward pass.
    """

    def __init__(
        self,
        model: str | tuple[Any, Any] = DEFAULT_CLIP_MODEL,
        device: str | None = None,
        batch_size: int = 32,
    ) -> None:
        if isinstance(model, str):
            from transformers import AutoModel, AutoProcessor

            self.name = model
            self.model = AutoModel.from_pretrained(model).eval()
            self.processor = AutoProcessor.from_pretrained(model)
        else:
            self.model, self.processor = model
            self.name = (
                getattr(getattr(self.model, "config", None), "_name_or_path", "") or type(self.model).__name__
            )
        if device is not None:
            self.model.to(device)
        self.batch_size = batch_size
        # SigLIP was trained on texts padded to the maximum length; CLIP on dynamic padding.
        model_type = getattr(getattr(self.model, "config", None), "model_type", "")
        self._padding = "max_length" if "siglip" in str(model_type) else True
        self._image_cache: dict[Any, torch.Tensor] = {}

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings ``[n_texts, d_embed]``."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            inputs = self.processor(
                text=list(texts[start : start + self.batch_size]),
                return_tensors="pt",
                padding=self._padding,
                truncation=True,
            )
            inputs = {k: v.to(self._device) for k, v in inputs.items()}
            with torch.no_grad():
                out.append(_embedding(self.model.get_text_features(**inputs)).float().cpu())
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    def image_embeddings(self, images: Sequence[Any]) -> torch.Tensor:
        """Unit-norm image embeddings ``[n_images, d_embed]``."""
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = [image.convert("RGB") for image in images[start : start + self.batch_size]]
            inputs = self.processor(images=chunk, return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(self._device, dtype=next(self.model.parameters()).dtype)
            with torch.no_grad():
                out.append(_embedding(self.model.get_image_features(pixel_values=pixel_values)).float().cpu())
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    def similarity(self, text: str, images: Sequence[Any]) -> float:
        """Mean cosine similarity between one text and several images, in [-1, 1]."""
        if not images:
            return float("nan")
        return float((self.image_embeddings(images) @ self.text_embeddings([text])[0]).mean())

    def score(
        self,
        explanations: pd.DataFrame,
        images_for_feature: Callable[[int], Sequence[Any]],
        progress: bool = True,
    ) -> pd.DataFrame:
        """Score every explanation row against its feature's images.

        Args:
            explanations: Columns ``feature``, ``explanation`` and optionally ``sae_id``, ``method``,
                ``direction``.
            images_for_feature: Feature id -> its (masked) top images, PIL. Called once per feature;
                the embeddings are reused for every method explaining that feature.
            progress: Show a progress bar.

        Returns:
            One row per input row: ``sae_id, feature, method, direction, method_label, explanation,
            clip_similarity, n_images``.
        """
        missing = {"feature", "explanation"} - set(explanations.columns)
        if missing:
            raise ValueError(f"The explanations DataFrame lacks column(s) {sorted(missing)}.")
        rows = []
        for row in tqdm(explanations.to_dict("records"), desc="CLIP similarity", disable=not progress):
            feature = int(row["feature"])
            if feature not in self._image_cache:
                images = list(images_for_feature(feature))
                self._image_cache[feature] = self.image_embeddings(images) if images else torch.empty(0)
            image_emb = self._image_cache[feature]  # [n_images, d_embed]
            text = row["explanation"] if isinstance(row["explanation"], str) else ""
            sim = (
                float((image_emb @ self.text_embeddings([text])[0]).mean())
                if len(image_emb)
                else float("nan")
            )
            method, direction = row.get("method", "unknown"), row.get("direction", "sae")
            rows.append(
                {
                    "sae_id": row.get("sae_id", ""),
                    "feature": feature,
                    "method": method,
                    "direction": direction,
                    "method_label": method_label(method, direction),
                    "explanation": text,
                    "clip_similarity": sim,
                    "n_images": int(len(image_emb)),
                }
            )
        return pd.DataFrame(rows)

    @staticmethod
    def summary(scores: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
        """Per method label: mean similarity with a bootstrap 95% CI and the number of features."""
        rows = []
        for label, group in scores.groupby("method_label", sort=False):
            mean, lo, hi = bootstrap_mean_ci(group["clip_similarity"], n_boot=n_boot, seed=seed)
            rows.append(
                {
                    "method_label": label,
                    "n_features": int(group["feature"].nunique()),
                    "clip_similarity": mean,
                    "clip_similarity_lo": lo,
                    "clip_similarity_hi": hi,
                }
            )
        return pd.DataFrame(rows)


class ClipRunScorer:
    """The CLIP similarity as a per-explanation scorer of a run: resumable, one row per explanation.

    Each explanation is compared with its feature's top mined images (those where it fired), so
    ``evaluate --scorer clip`` writes ``RUN/scores/<name>.clip.jsonl`` and ``compare`` shows a
    ``clip`` column beside the other scorers.

    Args:
        similarity: The :class:`ClipSimilarityScorer` (its model and processor).
        mined: The run's :class:`~vis_steer_lens.MinedActivations` (top images per feature).
        k_images: Top images compared per feature.
    """

    name = "clip"

    def __init__(self, similarity: ClipSimilarityScorer, mined: Any, *, k_images: int = 5) -> None:
        if k_images < 1:
            raise ValueError(f"k_images must be a positive number of top images; got {k_images}.")
        self.similarity = similarity
        self.mined = mined
        self.k_images = int(k_images)

    def _images(self, feature: int) -> list[Any]:
        tops = [t for t in self.mined.top_images(int(feature)) if t[1] > 0][: self.k_images]
        return [self.mined.image(int(image_id)) for image_id, _, _ in tops]

    def score(
        self,
        explanations: pd.DataFrame,
        progress: bool = True,
        out_path: Any = None,
        desc: str | None = None,
    ) -> pd.DataFrame:
        """Score every explanation row (rows of dead features are left out), resuming from ``out_path``.

        Returns:
            One row per explanation: the key columns, ``method_label``, ``is_control``,
            ``explanation``, ``clip_similarity`` (mean cosine over the top images, in [-1, 1];
            NaN for an empty answer or a feature with no top image) and ``n_images``.
        """
        from vis_steer_lens.evaluate.scoring import rows_frame, score_rows

        def chunk(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            frame = pd.DataFrame(rows)
            frame["explanation"] = [t if isinstance(t, str) else "" for t in frame["explanation"]]
            scored = self.similarity.score(frame, self._images, progress=False)
            out = []
            for row, sim, n in zip(rows, scored["clip_similarity"], scored["n_images"], strict=True):
                empty = not isinstance(row["explanation"], str) or not row["explanation"].strip()
                out.append(
                    {**row, "clip_similarity": float("nan") if empty else float(sim), "n_images": int(n)}
                )
            return out

        rows = score_rows(
            explanations,
            chunk,
            settings={"scorer": self.name, "model": str(self.similarity.name), "k_images": self.k_images},
            sae_id=str(self.mined.sae_id) if self.mined is not None else "",
            chunk_size=16,
            out_path=out_path,
            progress=progress,
            desc=desc or self.name,
        )
        return rows_frame(rows, ["clip_similarity", "n_images"])
