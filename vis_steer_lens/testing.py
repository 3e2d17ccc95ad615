"""Tiny random vision-language models with working processors, for tests (ours and yours).

As TransformerLens and SAELens ship test helpers, this module builds models of the real
architectures at toy size, in memory and without the network:

>>> from vis_steer_lens.testing import tiny_vlm
>>> vlm = tiny_vlm("internvl3")  # a HookedVLM over a random InternVLForConditionalGeneration
>>> inputs = vlm.prompt_inputs([image], "What is in the image?")  # doctest: +SKIP

The weights are random but not at their initial values: norm weights, layer scales, the class
token and position embeddings are drawn away from transformers' constant inits, and the
projector is never zero, so every vision edit reaches the logits and an equivalence test
against Hugging Face can fail where a shortcut would be taken.
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers
from torch import nn

from vis_steer_lens.families import get_adapter, supported_families

#: Families :func:`tiny_vlm` builds.
TINY_FAMILIES = ("gemma3", "internvl3")

_WORDS = (
    "the a an is are what in on of image images describe highlighted element shared all these this "
    "it one clear sentence red green blue yellow square circle large small top left right bottom "
    "picture object colour color shape nothing white black gray user model assistant system"
).split()
_PUNCTUATION = [".", ",", "?", "!", ":", "-", "'"]


def word_tokenizer(special: dict[str, str], extra: dict[str, str], chat_template: str, add_bos: bool):
    """A word-level fast tokenizer with a family's special tokens (newlines and punctuation are tokens).

    Args:
        special: ``pad_token``, ``eos_token``, ``unk_token`` (and ``bos_token``) → token.
        extra: Further special tokens by attribute name; ``<name>_id`` attributes are set too.
        chat_template: The Jinja chat template.
        add_bos: Whether plain calls prepend the BOS token.
    """
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys([*special.values(), *extra.values()]))
    words = sorted({variant for word in _WORDS for variant in (word, word.capitalize())})
    vocabulary = [*specials, "\n", *_PUNCTUATION, *words]
    backend = Tokenizer(
        models.WordLevel({t: i for i, t in enumerate(vocabulary)}, unk_token=special["unk_token"])
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"[^\S\n]+"), behavior="removed"),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        extra_special_tokens=extra,
        add_bos_token=add_bos,
        add_eos_token=False,
        padding_side="left",
        chat_template=chat_template,
        **special,
    )
    for name, token in extra.items():  # `start_image_token_id` etc., as the processors read them
        setattr(tokenizer, f"{name}_id", tokenizer.convert_tokens_to_ids(token))
    return tokenizer


def perturb_constant_parameters(modules: list[nn.Module], seed: int) -> None:
    """Draw every parameter that holds one repeated value (a norm's ones, a bias's zeros, a layer
    scale, a zero class token or projector) around that value, so no weight sits at its init."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in modules:
            for param in module.parameters():
                flat = param.flatten()
                if flat.numel() and bool((flat == flat[0]).all()):
                    value = float(flat[0])
                    scale = 0.3 if value == 0 else 0.5 * abs(value)
                    param.copy_(value + scale * torch.randn(param.shape, generator=gen))


def tiny_hf_vlm(
    family: str,
    *,
    seed: int = 0,
    vision_layers: int = 2,
    text_width: int = 32,
    norm_type: str = "layer_norm",
    qk_norm: bool = False,
) -> tuple[nn.Module, Any]:
    """A tiny random Hugging Face VLM of ``family`` and its processor (32x32 images, 8-px patches).

    Args:
        family: ``"gemma3"`` (SigLIP, 16 patches, 4 soft tokens) or ``"internvl3"`` (InternViT
            with a class token and layer scale, 16 patches, 4 soft tokens, Qwen2 text).
        seed: Seeds the weights.
        vision_layers: Vision encoder blocks.
        text_width: Hidden size of the language model (a "larger" model of the same family
            keeps the tower and widens this).
        norm_type: InternViT's ``"layer_norm"`` or ``"rms_norm"`` (ignored for Gemma 3).
        qk_norm: InternViT's q/k norm (ignored for Gemma 3).

    Returns:
        ``(model, processor)``: the model in eval mode, float32.
    """
    if family not in TINY_FAMILIES:
        known = [f for f in supported_families() if f in TINY_FAMILIES]
        raise ValueError(f"tiny_vlm builds the families {known}, got {family!r}.")
    adapter = get_adapter(family)
    torch.manual_seed(seed)
    model, processor = adapter.build_tiny(
        vision_layers=vision_layers, text_width=text_width, norm_type=norm_type, qk_norm=qk_norm
    )
    perturb_constant_parameters([adapter.tower(model), adapter.projector(model)], seed)
    return model.eval(), processor


def tiny_vlm(family: str = "gemma3", **kwargs: Any):
    """A :class:`~vis_steer_lens.HookedVLM` over :func:`tiny_hf_vlm`'s model, with its processor.

    Args:
        family: ``"gemma3"`` or ``"internvl3"``.
        **kwargs: ``seed``, ``vision_layers``, ``text_width``, ``norm_type``, ``qk_norm`` (see
            :func:`tiny_hf_vlm`).
    """
    from vis_steer_lens.hooked_vlm import HookedVLM

    model, processor = tiny_hf_vlm(family, **kwargs)
    return HookedVLM.from_hf(model, processor=processor, model_name=f"tiny-{family}")


def tiny_sae(
    vit: Any, hook_name: str = "blocks.0.hook_resid_post", d_sae: int = 64, k: int = 4, seed: int = 0
):
    """A random SAELens TopK SAE reading ``hook_name`` of ``vit`` (a HookedViT or HookedVLM).

    Unit-norm decoder rows; vision metadata of the model's family, with its tower fingerprint.
    """
    from sae_lens import TopKSAE, TopKSAEConfig

    from vis_steer_lens.saes.metadata import set_vision_metadata, vision_sae_metadata

    vit = getattr(vit, "vision", vit)
    hook = vit.parse_hook_name(hook_name)
    gen = torch.Generator().manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=hook.width, d_sae=d_sae, k=k))
    with torch.no_grad():
        for param in sae.parameters():
            param.copy_(0.3 * torch.randn(param.shape, generator=gen))
        sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True))
    metadata = vision_sae_metadata(
        hook.name,
        vit.cfg.model_name,
        vit.cfg.n_layers,
        family=vit.cfg.family,
        tower_fingerprint=vit.tower_fingerprint(),
    )
    return set_vision_metadata(sae, metadata)


__all__ = [
    "TINY_FAMILIES",
    "perturb_constant_parameters",
    "tiny_hf_vlm",
    "tiny_sae",
    "tiny_vlm",
    "word_tokenizer",
]
