"""Named instruction prompts for the explainers.

A :class:`PromptSet` holds the instruction for steering (one empty image), for Top-k with
masked images and with heatmaps, and the answer prefix the model is asked to start with. The
prompt id is recorded in every result row, so explanations made with different wordings never
mix silently.
"""

from __future__ import annotations

from dataclasses import dataclass

from vis_steer_lens.plugins import load_plugins


@dataclass(frozen=True)
class PromptSet:
    """Instructions shown to the explainer VLM.

    Attributes:
        prompt_id: Name recorded in results.
        steering: Instruction for one (empty, steered) image.
        topk_mask: Instruction for several top images whose inactive patches are masked out.
        topk_heatmap: Instruction for several top images with a heatmap overlay.
        answer_prefix: The sentence start the instructions ask for; stripped from answers.
        topk_answer_prefix: The sentence start of Top-k answers, if different.
        strip: Further strings removed from answers (markdown, boilerplate).
        source: Where the wording comes from.
    """

    prompt_id: str
    steering: str
    topk_mask: str
    topk_heatmap: str
    answer_prefix: str
    topk_answer_prefix: str | None = None
    strip: tuple[str, ...] = ("*",)
    source: str = "vis_steer_lens"

    def topk(self, display: str) -> str:
        """The Top-k instruction for ``display`` (``"mask"`` or ``"heatmap"``)."""
        if display == "mask":
            return self.topk_mask
        if display == "heatmap":
            return self.topk_heatmap
        raise ValueError(f"display must be 'mask' or 'heatmap', got {display!r}.")

    def prefix(self, method: str) -> str:
        """The answer prefix of a method's answers (``"steering"``, ``"topk"`` or ``"hybrid"``)."""
        if method in ("topk", "hybrid") and self.topk_answer_prefix:
            return self.topk_answer_prefix
        return self.answer_prefix


_PREFIX = "The highlighted element in the image is a"

DEFAULT = PromptSet(
    prompt_id="default",
    steering=(
        "Something in this image has been made to stand out: a visual pattern, an object, or an abstract idea. "
        "Say in one short sentence what it is, naming it as generally as is still accurate. "
        f'Begin your answer with "{_PREFIX}".'
    ),
    topk_mask=(
        "These images share one highlighted element; the parts of each image that do not show it are greyed "
        "out in square blocks. Say in one short sentence what the shared element is, naming it as generally as "
        f'is still accurate and ignoring the blocky masking. Begin your answer with "{_PREFIX}".'
    ),
    topk_heatmap=(
        "These images share one highlighted element, marked by a green overlay where it appears. Say in one "
        "short sentence what the shared element is, naming it as generally as is still accurate and ignoring "
        f'the green overlay itself. Begin your answer with "{_PREFIX}".'
    ),
    answer_prefix=_PREFIX,
)

# The instruction texts of Ferrando et al., "Language Models Can Explain Visual Features via Steering"
# (CVPR 2026), reproduced verbatim from the authors' code (HPAI-BSC/vision-interp,
# src/get_steering_explanations.py, load_prompt) because they are part of the experimental protocol.
PAPER = PromptSet(
    prompt_id="paper",
    steering=(
        "You are given an image highlighting a visual or semantic element. This element may range from a "
        "low-level visual feature to a high-level abstract concept. Your task is to describe this element in a "
        "single, clear sentence. If the element is a high-level abstract concept, describe it as such; "
        "otherwise, describe its visual patterns. Favor a more general interpretation. Start the highlighted "
        'element description with \\"The highlighted element in the image is a\\"'
    ),
    topk_mask=(
        "You are given set of images highlighting a visual or semantic element. The patches of the images not "
        "showing the element are masked out, giving the impression of a pixelated image. This element may range "
        "from a low-level visual feature to a high-level abstract concept. Your task is to describe this element "
        "in a single, clear sentence. If the element is a high-level abstract concept, describe it as such; "
        "otherwise, describe its visual patterns. Favor a more general interpretation. Provide a single "
        "description for the highlighted element appearing in all images, and please ignore the pixelated "
        "effect of the mask when describing the element. Start the highlighted element description with "
        '\\"The highlighted element in the image is a\\".'
    ),
    topk_heatmap=(
        "You are given set of images highlighting a visual or semantic element. The patches of the images "
        "showing the element are highlighted with a green heatmap. This element may range from a low-level "
        "visual feature to a high-level abstract concept. Your task is to describe this element in a single, "
        "clear sentence. If the element is a high-level abstract concept, describe it as such; otherwise, "
        "describe its visual patterns. Favor a more general interpretation. Provide a single description for "
        "the highlighted element appearing in all images, and please ignore the overlayed green heatmap when "
        'describing the element. Start the highlighted element description with \\"The highlighted element in '
        'the image is a\\".'
    ),
    answer_prefix=_PREFIX,
    strip=(
        "Here's a description of the highlighted element in the image:",
        "Here's a description of the highlighted element across all the images:",
        "Here's a description of the highlighted element across all images:",
        "Summary:",
        "*",
    ),
    source="Ferrando et al. (CVPR 2026), HPAI-BSC/vision-interp",
)

_REGISTRY: dict[str, PromptSet] = {p.prompt_id: p for p in (DEFAULT, PAPER)}


def register_prompt(prompt: PromptSet, overwrite: bool = False) -> None:
    """Add a prompt set to the registry under ``prompt.prompt_id`` (plug-ins add theirs, e.g. ``"toy"``)."""
    if prompt.prompt_id in _REGISTRY and not overwrite and _REGISTRY[prompt.prompt_id] != prompt:
        raise ValueError(
            f"A prompt set named {prompt.prompt_id!r} exists; pass overwrite=True to replace it."
        )
    _REGISTRY[prompt.prompt_id] = prompt


def get_prompt(prompt: str | PromptSet) -> PromptSet:
    """Look up a prompt set by id (``"default"``, ``"paper"``, ``"toy"``, ...) or pass one through."""
    if isinstance(prompt, PromptSet):
        return prompt
    if prompt not in _REGISTRY:
        load_plugins()  # a plug-in's preset (the toy world's "toy") registers on first use
    try:
        return _REGISTRY[prompt]
    except KeyError:
        raise KeyError(f"Unknown prompt {prompt!r}; registered: {sorted(_REGISTRY)}.") from None


def list_prompts() -> list[str]:
    """Ids of the registered prompt sets (the installed plug-ins' included)."""
    load_plugins()
    return sorted(_REGISTRY)
