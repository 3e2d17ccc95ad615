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

# Chat templates with each family's real turn structure and image placeholders.
_GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for message in messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
_QWEN_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<IMG_CONTEXT>\n' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] }}{%- endif -%}"
    "{%- endfor -%}"
    "{{ '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

_GEMMA3_SPECIAL = {
    "pad_token": "<pad>",
    "eos_token": "<eos>",
    "bos_token": "<bos>",
    "unk_token": "<unk>",
}
_GEMMA3_EXTRA = {
    "start_of_turn_token": "<start_of_turn>",
    "end_of_turn_token": "<end_of_turn>",
    "boi_token": "<start_of_image>",
    "eoi_token": "<end_of_image>",
    "image_token": "<image_soft_token>",
}
_QWEN_SPECIAL = {"pad_token": "<|endoftext|>", "eos_token": "<|im_end|>", "unk_token": "<unk>"}
_QWEN_EXTRA = {
    "im_start_token": "<|im_start|>",
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}


def _word_tokenizer(special: dict[str, str], extra: dict[str, str], chat_template: str, add_bos: bool):
    """A word-level fast tokenizer with a family's special tokens (newlines are tokens)."""
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


def _perturb(model: nn.Module, seed: int) -> None:
    """Move every constant-initialised vision/projector parameter away from its init."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "vision_tower" not in name and "multi_modal_projector" not in name:
                continue
            leaf = name.rsplit(".", 1)[-1]
            noise = torch.randn(param.shape, generator=gen)
            if leaf in ("lambda_1", "lambda_2"):
                param.copy_(0.5 + 0.5 * noise.abs())
            elif param.ndim == 1 and ("norm" in name or "layernorm" in name):
                param.copy_((1.0 if leaf == "weight" else 0.0) + 0.2 * noise)
            elif leaf in ("cls_token", "position_embeddings", "mm_input_projection_weight") or (
                "multi_modal_projector" in name and param.ndim > 1
            ):
                param.copy_(0.3 * noise)


def _tiny_gemma3(seed: int, vision_layers: int, text_width: int) -> tuple[nn.Module, Any]:
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
    )

    tokenizer = _word_tokenizer(_GEMMA3_SPECIAL, _GEMMA3_EXTRA, _GEMMA3_TEMPLATE, add_bos=True)
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in _GEMMA3_EXTRA.items()}
    config = Gemma3Config(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=vision_layers,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            vision_use_head=False,
        ),
        text_config=dict(
            hidden_size=text_width,
            intermediate_size=2 * text_width,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=8,
            vocab_size=len(tokenizer),
            max_position_embeddings=256,
            sliding_window=64,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        mm_tokens_per_image=4,
        image_token_index=ids["image_token"],
        boi_token_index=ids["boi_token"],
        eoi_token_index=ids["eoi_token"],
    )
    torch.manual_seed(seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    image_processor = Gemma3ImageProcessor(
        size={"height": 32, "width": 32},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_pan_and_scan=False,
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=_GEMMA3_TEMPLATE,
        image_seq_length=4,
    )
    return model, processor


def _tiny_internvl3(
    seed: int, vision_layers: int, text_width: int, norm_type: str, qk_norm: bool
) -> tuple[nn.Module, Any]:
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
    )

    tokenizer = _word_tokenizer(_QWEN_SPECIAL, _QWEN_EXTRA, _QWEN_TEMPLATE, add_bos=False)
    config = InternVLConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=vision_layers,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            norm_type=norm_type,
            use_qk_norm=qk_norm,
            hidden_act="gelu",
        ),
        text_config=dict(
            model_type="qwen2",
            hidden_size=text_width,
            intermediate_size=2 * text_width,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=256,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=False,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=4,
        downsample_ratio=0.5,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config).eval()
    image_processor = GotOcr2ImageProcessor(
        size={"height": 32, "width": 32},
        crop_to_patches=False,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )

    class ImageOnlyInternVLProcessor(InternVLProcessor):
        """InternVL's processor without its video processor (which needs torchvision)."""

        def __init__(
            self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None
        ):
            super().__init__(image_processor, tokenizer, None, image_seq_length, chat_template)

    processor = ImageOnlyInternVLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_length=4, chat_template=_QWEN_TEMPLATE
    )
    return model, processor


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
    if family == "gemma3":
        model, processor = _tiny_gemma3(seed, vision_layers, text_width)
    elif family == "internvl3":
        model, processor = _tiny_internvl3(seed, vision_layers, text_width, norm_type, qk_norm)
    else:
        known = [f for f in supported_families() if f in TINY_FAMILIES]
        raise ValueError(f"tiny_vlm builds the families {known}, got {family!r}.")
    _perturb(model, seed)
    return model, processor


def tiny_vlm(family: str = "gemma3", **kwargs: Any):
    """A :class:`~vis_steer_lens.HookedVLM` over :func:`tiny_hf_vlm`'s model, with its processor.

    Args:
        family: ``"gemma3"`` or ``"internvl3"``.
        **kwargs: ``seed``, ``vision_layers``, ``text_width``, ``norm_type``, ``qk_norm`` (see
            :func:`tiny_hf_vlm`).
    """
    from vis_steer_lens.hooked_vlm import HookedVLM

    model, processor = tiny_hf_vlm(family, **kwargs)
    get_adapter(family)  # a clear error if the family is not registered
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


__all__ = ["TINY_FAMILIES", "tiny_hf_vlm", "tiny_sae", "tiny_vlm"]
