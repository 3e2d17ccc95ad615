"""Scoring explanations with a VLM and real images, no text-to-image model: likelihood and detection.

Both scorers show a VLM (the subject model or any other) held-out images of each feature: the
pool images on which the feature fires most, other than the top images its explainer saw
(*activating*), and random pool images (*random*). An explanation is good when the VLM's
reading of it separates the two sets; each scorer reports that separation as an AUROC per
explanation, named after the scorer (``likelihood``, ``detection``), and the pooled AUROC over
every feature's images in :func:`pooled_auroc`.

* :class:`LikelihoodScorer` (captioning models, the toy VLM included): the log-probability of
  the explanation as the answer to the describe prompt, on each image, minus that of the same
  explanation on an empty image (a per-explanation constant: it leaves the per-feature AUROC as
  it is and puts features on one scale for the pooled AUROC).
* :class:`DetectionScorer` (instruction-following models): the VLM is asked whether the
  explanation applies to the image; the score is P(yes) / (P(yes) + P(no)) at the answer's first
  token (delphi's detection scorer, for images).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from vis_steer_lens.activations import iter_images
from vis_steer_lens.evaluate.encoding import make_encoder, pooled_activations
from vis_steer_lens.evaluate.generation_auroc import feature_seed
from vis_steer_lens.evaluate.metrics import auroc
from vis_steer_lens.evaluate.scoring import rows_frame, score_rows
from vis_steer_lens.saes.metadata import sae_identity


class VLMScorerError(ValueError):
    """A VLM scorer's setting or input that cannot work; the message says what to pass instead."""


@dataclass(frozen=True)
class HeldOutSettings:
    """Which images a VLM scorer shows per feature.

    Attributes:
        n_activating: Held-out activating images per feature (the pool's strongest, by max over
            patches, that fired and that the explainer did not see).
        n_random: Random pool images per feature (seeded by the feature; never its activating ones).
        seed: Seeds the random images.
        batch_size: Images per forward pass.
    """

    n_activating: int = 5
    n_random: int = 5
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.n_activating < 1 or self.n_random < 1 or self.batch_size < 1:
            raise VLMScorerError(
                "n_activating, n_random and batch_size must be at least 1; got "
                f"{self.n_activating}, {self.n_random} and {self.batch_size}."
            )


class _HeldOutImageScorer:
    """What both VLM scorers share: the image pool, held-out images per feature, the row loop."""

    name = "vlm"

    def __init__(
        self,
        vlm: Any,
        sae: Any,
        images: Iterable[Any],
        *,
        mined: Any = None,
        scorer_vlm: Any = None,
        n_activating: int = 5,
        n_random: int = 5,
        batch_size: int = 32,
        seed: int = 0,
        pool_key: str | None = None,
    ) -> None:
        self.vlm = vlm
        self.sae = sae
        self.scorer_vlm = scorer_vlm if scorer_vlm is not None else vlm
        self.scorer_vlm.require_processor()
        if self.scorer_vlm.vision.variable_grids:
            raise VLMScorerError(
                f"{type(self).__name__} puts every image in one prompt of a fixed length, but a native-resolution "
                "model gives each image its own number of image tokens; score it with generation_auroc or "
                "segmentation_iou, or pass scorer_vlm= a fixed-grid VLM."
            )
        self.mined = mined
        self.held_out = HeldOutSettings(n_activating, n_random, seed, batch_size)
        self._source = images
        self._images: list[Any] | None = None
        self._pool_max: torch.Tensor | None = None
        self._features: dict[Any, torch.Tensor] = {}
        self._prompts: dict[str, dict[str, torch.Tensor]] = {}
        self.pool_key = pool_key

    # ------------------------------------------------------------------ images
    def pool(self) -> tuple[list[Any], torch.Tensor]:
        """The pool's images and every feature's max over patches on them ``[n_pool, d_sae]``."""
        if self._pool_max is None:
            self._images = list(iter_images(self._source))
            if not self._images:
                raise VLMScorerError(
                    "The image pool is empty; pass images the feature may fire on (--images)."
                )
            encoder = make_encoder(self.vlm, self.sae, None, None)
            _, self._pool_max = pooled_activations(encoder, self._images, self.held_out.batch_size)
        return self._images, self._pool_max

    def _seen(self, feature: int) -> set[int]:
        """Pool indices the explainer saw: the mined top images, when the pool is the mined source."""
        if self.mined is None:
            return set()
        source = getattr(self._source, "source_id", None)
        if source is None or source != getattr(self.mined, "source_id", None):
            return set()
        return {int(t[0]) for t in self.mined.top_images(int(feature))}

    def held_out_images(self, feature: int) -> tuple[list[int], list[int]]:
        """``(activating, random)`` pool indices of one feature, deterministic under the seed."""
        _, pool_max = self.pool()
        acts = pool_max[:, int(feature)].numpy()
        seen = self._seen(feature)
        order = np.argsort(-acts, kind="stable")
        activating = [int(i) for i in order if acts[i] > 0 and int(i) not in seen][
            : self.held_out.n_activating
        ]
        rest = np.array([i for i in range(len(acts)) if i not in set(activating) and i not in seen])
        rng = np.random.default_rng(feature_seed(self.held_out.seed, int(feature)))
        take = min(self.held_out.n_random, len(rest))
        randoms = sorted(int(i) for i in rng.choice(rest, size=take, replace=False)) if take else []
        return activating, randoms

    def _soft_tokens(self, indices: Sequence[int]) -> torch.Tensor:
        """The scorer VLM's soft image tokens of pool images ``[n, soft, d_lm]`` (cached per image)."""
        images, _ = self.pool()
        missing = [i for i in dict.fromkeys(indices) if i not in self._features]
        vlm = self.scorer_vlm
        for start in range(0, len(missing), self.held_out.batch_size):
            chunk = missing[start : start + self.held_out.batch_size]
            inputs = vlm.prompt_inputs([images[i] for i in chunk], "x")
            with torch.no_grad():
                soft = vlm.encode_images(**vlm.split_inputs(inputs)[1])
            for row, index in enumerate(chunk):
                self._features[index] = soft[row].cpu()
        return torch.stack([self._features[i] for i in indices])

    def _empty_tokens(self, kind: str) -> torch.Tensor:
        key = ("empty", kind)
        if key not in self._features:
            vlm = self.scorer_vlm
            inputs = vlm.prompt_inputs([vlm.empty_image(kind)], "x")
            with torch.no_grad():
                self._features[key] = vlm.encode_images(**vlm.split_inputs(inputs)[1])[0].cpu()
        return self._features[key]

    # ------------------------------------------------------------------ text
    def _inputs(self, n: int, instruction: str, answer: str | None = None) -> dict[str, torch.Tensor]:
        """``n`` identical chat prompts with one image each (and ``answer``'s tokens appended).

        The rows are one templated prompt repeated (the images enter as soft tokens), so no row is
        padded and the processor runs once per instruction.
        """
        if instruction not in self._prompts:
            vlm = self.scorer_vlm
            inputs = vlm.prompt_inputs([vlm.empty_image("white")], instruction)
            self._prompts[instruction] = vlm.split_inputs(inputs)[0]
        one = dict(self._prompts[instruction])
        if answer is not None:
            ids = self._answer_ids(answer).to(one["input_ids"].device).unsqueeze(0)  # [1, answer]
            seq = one["input_ids"].shape
            for key, value in list(one.items()):
                if key == "input_ids" or not torch.is_tensor(value) or value.shape != seq:
                    continue
                fill = 1 if key == "attention_mask" else 0
                one[key] = torch.cat([value, torch.full_like(ids, fill, dtype=value.dtype)], dim=1)
            one["input_ids"] = torch.cat([one["input_ids"], ids], dim=1)
        return {
            k: v.expand(n, *v.shape[1:]) if torch.is_tensor(v) and v.shape[0] == 1 else v
            for k, v in one.items()
        }

    def _answer_ids(self, answer: str) -> torch.Tensor:
        ids = self.scorer_vlm.tokenizer(answer, add_special_tokens=False)["input_ids"]
        if not ids:
            raise VLMScorerError(f"The answer {answer!r} has no tokens; score non-empty explanations.")
        return torch.tensor(ids, dtype=torch.long)

    def _logits(self, inputs: dict[str, torch.Tensor], soft: torch.Tensor) -> torch.Tensor:
        vlm = self.scorer_vlm
        with torch.no_grad():
            return vlm.forward(**inputs, image_features=soft.to(vlm.device, vlm.dtype)).float()

    # ------------------------------------------------------------------ rows
    def _image_scores(self, explanation: str, indices: list[int]) -> tuple[list[float], float]:
        raise NotImplementedError

    def score_feature(self, feature: int, explanation: str) -> dict[str, Any]:
        """AUROC of the held-out activating against the random images for one explanation."""
        activating, randoms = self.held_out_images(feature)
        empty = {self.name: float("nan"), "activating": activating, "random": randoms}
        if not isinstance(explanation, str) or not explanation.strip() or not activating or not randoms:
            return {**empty, "activating_scores": [], "random_scores": []}
        scores, baseline = self._image_scores(explanation.strip(), activating + randoms)
        pos, neg = scores[: len(activating)], scores[len(activating) :]
        return {
            self.name: auroc(pos, neg),
            "activating": activating,
            "random": randoms,
            "activating_scores": pos,
            "random_scores": neg,
            "baseline": baseline,
        }

    def _settings(self) -> dict[str, Any]:
        vision = getattr(self.scorer_vlm, "vision", self.scorer_vlm)
        settings = {
            "scorer": self.name,
            "scorer_model": str(
                getattr(getattr(vision, "cfg", None), "model_name", type(self.scorer_vlm).__name__)
            ),
            "n_activating": self.held_out.n_activating,
            "n_random": self.held_out.n_random,
            "seed": self.held_out.seed,
        }
        if self.pool_key is not None:
            settings["pool"] = self.pool_key
        return settings

    def score(
        self,
        explanations: pd.DataFrame,
        progress: bool = True,
        out_path: str | Path | None = None,
        desc: str | None = None,
    ) -> pd.DataFrame:
        """Score every explanation row (rows of dead features are left out); resumable from ``out_path``.

        Returns:
            One row per explanation: the key columns, ``method_label``, ``is_control``,
            ``explanation``, the AUROC column (:attr:`name`), the pool indices ``activating`` and
            ``random`` and their scores ``activating_scores`` and ``random_scores``.
        """

        def chunk(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [{**row, **self.score_feature(row["feature"], row["explanation"])} for row in rows]

        rows = score_rows(
            explanations,
            chunk,
            settings=self._settings(),
            sae_id=sae_identity(self.sae) if self.sae is not None else "",
            chunk_size=16,
            out_path=out_path,
            progress=progress,
            desc=desc or self.name,
        )
        return rows_frame(rows, [self.name, "activating", "random", "activating_scores", "random_scores"])


class LikelihoodScorer(_HeldOutImageScorer):
    """Score an explanation by how much likelier a captioning VLM finds it on activating images.

    Per image: ``log P(answer | image, prompt) - log P(answer | empty image, prompt)``, the answer
    being ``answer_template`` filled with the explanation; the score column ``likelihood`` is the
    AUROC of those over held-out activating vs random images.

    Args:
        vlm: The subject :class:`~vis_steer_lens.HookedVLM` (its SAE features pick the images).
        sae: The SAE whose features were explained.
        images: The pool of held-out and random images (PIL images, a list, an image source).
        mined: The mined top images, so the explainer's images are left out when the pool is
            the mined source.
        scorer_vlm: The VLM that reads the explanations (default: ``vlm``).
        prompt: The describe prompt (the toy world's: ``"Describe the image."``).
        answer_template: The answer, with ``{explanation}`` in it.
        empty_image: The baseline image (``"white"``, ``"black"``, ``"gray"``, ``"mean"``).
        n_activating, n_random, batch_size, seed: :class:`HeldOutSettings`.
        per_token: Average the log-probability over the answer's tokens instead of summing.
    """

    name = "likelihood"

    def __init__(
        self,
        vlm: Any,
        sae: Any,
        images: Iterable[Any],
        *,
        mined: Any = None,
        scorer_vlm: Any = None,
        prompt: str = "Describe the image.",
        answer_template: str = "{explanation}",
        empty_image: str = "white",
        n_activating: int = 5,
        n_random: int = 5,
        batch_size: int = 32,
        seed: int = 0,
        per_token: bool = False,
        pool_key: str | None = None,
    ) -> None:
        if "{explanation}" not in answer_template:
            raise VLMScorerError(
                f"answer_template must contain '{{explanation}}'; got {answer_template!r}. E.g. 'a {{explanation}}'."
            )
        super().__init__(
            vlm,
            sae,
            images,
            mined=mined,
            scorer_vlm=scorer_vlm,
            n_activating=n_activating,
            n_random=n_random,
            batch_size=batch_size,
            seed=seed,
            pool_key=pool_key,
        )
        self.prompt = prompt
        self.answer_template = answer_template
        self.empty_image = empty_image
        self.per_token = per_token

    def _settings(self) -> dict[str, Any]:
        return {
            **super()._settings(),
            "prompt": self.prompt,
            "answer_template": self.answer_template,
            "empty_image": self.empty_image,
            "per_token": self.per_token,
        }

    def answer_logprobs(self, answer: str, soft: torch.Tensor) -> torch.Tensor:
        """``log P(answer | image, prompt)`` per image ``[n]``, from soft image tokens ``[n, soft, d_lm]``."""
        n_answer = len(self._answer_ids(answer))
        out = []
        for start in range(0, soft.shape[0], self.held_out.batch_size):
            part = soft[start : start + self.held_out.batch_size]
            inputs = self._inputs(part.shape[0], self.prompt, answer)
            logits = self._logits(inputs, part)  # [n, seq, vocab]
            targets = inputs["input_ids"][:, -n_answer:]
            logp = torch.log_softmax(logits[:, -n_answer - 1 : -1], dim=-1).gather(-1, targets.unsqueeze(-1))
            total = logp.squeeze(-1).sum(dim=1)
            out.append((total / n_answer if self.per_token else total).cpu())
        return torch.cat(out)

    def _image_scores(self, explanation: str, indices: list[int]) -> tuple[list[float], float]:
        answer = self.answer_template.format(explanation=explanation)
        soft = torch.cat([self._soft_tokens(indices), self._empty_tokens(self.empty_image).unsqueeze(0)])
        logp = self.answer_logprobs(answer, soft)
        baseline = float(logp[-1])
        return [float(v) - baseline for v in logp[:-1]], baseline


class DetectionScorer(_HeldOutImageScorer):
    """Score an explanation by whether a VLM, shown one image at a time, says it applies.

    The score per image is ``P(yes) / (P(yes) + P(no))`` at the answer's first token (over the
    spellings in ``yes_tokens`` / ``no_tokens`` the tokenizer has); the score column
    ``detection`` is its AUROC over held-out activating vs random images.

    Args:
        vlm, sae, images, mined, scorer_vlm: As :class:`LikelihoodScorer`.
        question: The question, with ``{explanation}`` in it.
        yes_tokens, no_tokens: Spellings of the two answers.
        n_activating, n_random, batch_size, seed: :class:`HeldOutSettings`.

    Raises:
        VLMScorerError: If the scorer VLM's tokenizer has none of the yes or no spellings as a
            token of its own (a captioning model: use :class:`LikelihoodScorer`).
    """

    name = "detection"

    def __init__(
        self,
        vlm: Any,
        sae: Any,
        images: Iterable[Any],
        *,
        mined: Any = None,
        scorer_vlm: Any = None,
        question: str = 'Does this image show "{explanation}"? Answer yes or no.',
        yes_tokens: Sequence[str] = ("Yes", "yes", " Yes", " yes"),
        no_tokens: Sequence[str] = ("No", "no", " No", " no"),
        n_activating: int = 5,
        n_random: int = 5,
        batch_size: int = 32,
        seed: int = 0,
        pool_key: str | None = None,
    ) -> None:
        if "{explanation}" not in question:
            raise VLMScorerError(f"question must contain '{{explanation}}'; got {question!r}.")
        super().__init__(
            vlm,
            sae,
            images,
            mined=mined,
            scorer_vlm=scorer_vlm,
            n_activating=n_activating,
            n_random=n_random,
            batch_size=batch_size,
            seed=seed,
            pool_key=pool_key,
        )
        self.question = question
        self.yes_ids = self._single_tokens(yes_tokens)
        self.no_ids = self._single_tokens(no_tokens)
        if not self.yes_ids or not self.no_ids or set(self.yes_ids) & set(self.no_ids):
            raise VLMScorerError(
                f"The scorer VLM's tokenizer has no single token for yes ({list(yes_tokens)}) or no "
                f"({list(no_tokens)}); use a model that answers yes/no, or LikelihoodScorer for a captioning one."
            )

    def _single_tokens(self, spellings: Sequence[str]) -> list[int]:
        tokenizer = getattr(self.scorer_vlm.processor, "tokenizer", self.scorer_vlm.processor)
        ids = []
        for text in spellings:
            encoded = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1 and encoded[0] != tokenizer.unk_token_id:
                ids.append(int(encoded[0]))
        return sorted(set(ids))

    def _settings(self) -> dict[str, Any]:
        return {**super()._settings(), "question": self.question}

    def p_yes(self, explanation: str, soft: torch.Tensor) -> torch.Tensor:
        """``P(yes) / (P(yes) + P(no))`` per image ``[n]``, from soft image tokens ``[n, soft, d_lm]``."""
        instruction = self.question.format(explanation=explanation)
        out = []
        for start in range(0, soft.shape[0], self.held_out.batch_size):
            part = soft[start : start + self.held_out.batch_size]
            logits = self._logits(self._inputs(part.shape[0], instruction), part)[:, -1]  # [n, vocab]
            probs = torch.softmax(logits, dim=-1)
            yes, no = probs[:, self.yes_ids].sum(-1), probs[:, self.no_ids].sum(-1)
            out.append((yes / (yes + no).clamp_min(1e-30)).cpu())
        return torch.cat(out)

    def _image_scores(self, explanation: str, indices: list[int]) -> tuple[list[float], float]:
        return [float(v) for v in self.p_yes(explanation, self._soft_tokens(indices))], float("nan")


def pooled_auroc(scores: pd.DataFrame) -> float:
    """One AUROC over every row's activating against every row's random image scores (a VLM scorer's rows)."""
    pos = [v for values in scores["activating_scores"] for v in (values or [])]
    neg = [v for values in scores["random_scores"] for v in (values or [])]
    return auroc(pos, neg)


__all__ = ["DetectionScorer", "HeldOutSettings", "LikelihoodScorer", "VLMScorerError", "pooled_auroc"]
