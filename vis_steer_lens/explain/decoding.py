"""A lean greedy decoding loop that retires finished rows, for batched explainers.

Steered answers are mostly one word with a few full sentences. Hugging Face ``generate`` keeps
every row of the batch in each forward pass until the longest one ends, and pays its general
machinery (logits processors, stopping-criteria lists, ``prepare_inputs_for_generation``, cache
bookkeeping) at every step. :func:`greedy_decode` runs the same Hugging Face forward passes
(one prefill with the image soft tokens, then one token per step with the KV cache) but drops a
row from the batch, its KV cache included, as soon as it has ended. Its output equals greedy
``generate`` with the same EOS ids, pad id and stopping criterion, token for token.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import DynamicCache

if TYPE_CHECKING:
    from vis_steer_lens.hooked_vlm import HookedVLM

#: A stopping criterion: ``(tokens [rows, seq], scores) -> bool [rows]`` (``SentenceEndStop``,
#: any transformers ``StoppingCriteria`` that judges each row by its own tokens).
StopFn = Callable[..., torch.Tensor]

# Keys any family's prompt may hold; a family adds its own (HookedVLM.language_input_keys, e.g. what
# places the image tokens for a multimodal RoPE).
_COMMON_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@torch.no_grad()
def greedy_decode(
    vlm: HookedVLM | nn.Module,
    inputs: Mapping[str, torch.Tensor],
    image_features: torch.Tensor | None,
    max_new_tokens: int,
    eos_token_ids: int | Sequence[int],
    pad_token_id: int,
    stop: StopFn | Sequence[StopFn] | None = None,
    *,
    return_finished: bool = False,
    on_step: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding with the KV cache that drops each row from the batch once it has ended.

    A row ends when it emits one of ``eos_token_ids`` or when ``stop`` says so; from then on it
    is padded with ``pad_token_id`` and no longer runs through the model. The result equals
    ``vlm.generate(**inputs, image_features=image_features, max_new_tokens=max_new_tokens,
    do_sample=False, eos_token_id=eos_token_ids, pad_token_id=pad_token_id,
    stopping_criteria=stop)`` token for token (Hugging Face pads finished rows too).

    Note:
        The next token is the plain argmax: no logits processors, as in ``generate`` when the
        model's generation config asks for none in greedy mode (no repetition penalty, no
        suppressed tokens). The cache is always a ``DynamicCache``; where the generation config
        sets ``cache_implementation`` (Gemma 3 ``-it`` checkpoints ship ``"hybrid"``),
        ``generate`` uses a static cache instead, with the same values up to rounding.

    Args:
        vlm: A :class:`~vis_steer_lens.HookedVLM` (its ``hf_model`` runs) or a Hugging Face
            ``...ForConditionalGeneration`` model of a registered family.
        inputs: ``input_ids`` ``[batch, seq]`` (left-padded), optionally ``attention_mask``
            ``[batch, seq]``, (Gemma 3) ``token_type_ids`` ``[batch, seq]`` (1 at image tokens) and
            the family's own keys (``vlm.language_input_keys``), as the first half of
            :meth:`~vis_steer_lens.HookedVLM.split_inputs` gives them.
        image_features: Soft image tokens ``[n_images, soft_tokens, d_lm]`` that replace the
            image placeholder tokens in the prefill (``None`` for a text-only prompt).
        max_new_tokens: Cap on generated tokens per row (>= 1).
        eos_token_ids: Token id(s) that end a row; the EOS token itself is kept.
        pad_token_id: Fills a row after it ended.
        stop: A stopping criterion or a list of them (any one ends a row), called as
            ``stop(tokens, None)`` after each step with ``tokens`` ``[live_rows, seq + step]``,
            the live rows only: it must judge each row by its own tokens, not by its index.
        return_finished: Also return which rows ended (by EOS or ``stop``) rather than at
            ``max_new_tokens``.
        on_step: Called after each step as ``on_step(rows, next_tokens)``: ``rows`` ``[live]``
            the batch rows still decoding at that step (their index in ``input_ids``) and
            ``next_tokens`` ``[live]`` the token each just got, for streaming answers as they come.

    Returns:
        Token ids ``[batch, seq + new]``, ``new`` the most tokens any row generated; with
        ``return_finished``, also a bool tensor ``[batch]``.

    Raises:
        ValueError: On ``max_new_tokens < 1``, unknown input keys (e.g. ``pixel_values``: encode
            them first and pass ``image_features``), or mismatched input shapes.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    vlm = _as_hooked(vlm)
    allowed = tuple(dict.fromkeys((*_COMMON_INPUT_KEYS, *vlm.language_input_keys)))
    unknown = set(inputs) - set(allowed)
    if unknown:
        raise ValueError(
            f"greedy_decode takes only {allowed} in inputs, got also {sorted(unknown)}; "
            "pass images as image_features (e.g. vlm.encode_images(pixel_values))."
        )
    if "input_ids" not in inputs:
        raise ValueError("inputs must hold input_ids [batch, seq].")
    hf_model = getattr(vlm, "hf_model", vlm)
    input_ids = inputs["input_ids"]
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}.")
    batch, prompt_length = input_ids.shape
    device = input_ids.device
    for key in ("attention_mask", "token_type_ids"):
        if inputs.get(key) is not None and inputs[key].shape != input_ids.shape:
            raise ValueError(
                f"{key} must have input_ids' shape {tuple(input_ids.shape)}, got {tuple(inputs[key].shape)}."
            )
    eos = torch.tensor(
        [eos_token_ids] if isinstance(eos_token_ids, int) else list(eos_token_ids),
        dtype=torch.long,
        device=device,
    )
    stops = [] if stop is None else [stop] if callable(stop) else list(stop)
    cache_argument = _cache_argument(type(hf_model))

    attention_mask = inputs.get("attention_mask")
    if attention_mask is None:
        attention_mask = _infer_attention_mask(input_ids, eos, pad_token_id)
    # Positions count only the real tokens, so left padding does not shift a row's positions.
    position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    # The family's prefill positions (a multimodal RoPE for some) and each row's offset of decoded positions.
    prefill_positions, position_offset = vlm.decoding_positions(inputs, position_ids, attention_mask)
    if bool((attention_mask == 1).all()):
        attention_mask = None  # no padding: the model builds a plain causal mask, faster
    else:
        attention_mask = attention_mask.long()

    # The cache transformers builds for this config: sliding-window layers keep only their window.
    cache = DynamicCache(config=hf_model.config.get_text_config(decoder=True))
    prefill_mask = attention_mask
    if attention_mask is None:
        # Without padding some families' prefill masks follow from the inputs alone (Gemma 3's
        # from token_type_ids), faster than transformers builds them.
        prefill_mask = vlm.prefill_masks(inputs) or None
    prefill = {
        "input_ids": input_ids,
        "attention_mask": prefill_mask,
        "position_ids": prefill_positions,
        # Only the prefill: it makes the image tokens attend to each other both ways.
        "token_type_ids": inputs.get("token_type_ids"),
        cache_argument: cache,
        "use_cache": True,
        "logits_to_keep": 1,  # only the last position's logits are needed
    }
    if image_features is not None:
        prefill.update(vlm.image_feature_inputs(image_features))
    logits = hf_model(**prefill).logits[:, -1]

    new_tokens = torch.full((batch, max_new_tokens), pad_token_id, dtype=input_ids.dtype, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    rows = torch.arange(batch, device=device)  # original row of each live row
    sequences = input_ids  # [live, prompt + step], what the stopping criteria read
    next_position = position_ids[:, -1]
    steps = 0
    while True:
        # generate picks from float32 logits; the cast is exact, so the pick is the same.
        next_tokens = logits.float().argmax(dim=-1)
        new_tokens[rows, steps] = next_tokens
        if on_step is not None:
            on_step(rows, next_tokens)
        steps += 1
        sequences = torch.cat([sequences, next_tokens[:, None]], dim=-1)
        done = torch.isin(next_tokens, eos)
        for criterion in stops:
            done |= criterion(sequences, None).to(device=device, dtype=torch.bool)
        finished[rows[done]] = True
        if steps == max_new_tokens or bool(done.all()):
            break
        if bool(done.any()):
            # Retire the ended rows everywhere the batch dimension lives, KV cache included.
            keep = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, sequences, next_tokens = rows[keep], sequences[keep], next_tokens[keep]
            next_position = next_position[keep]
            if position_offset is not None:
                position_offset = position_offset[keep]
            if attention_mask is not None:
                attention_mask = attention_mask[keep]
        next_position = next_position + 1
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(rows), 1)], dim=-1)
        logits = hf_model(
            input_ids=next_tokens[:, None],
            attention_mask=attention_mask,
            position_ids=(next_position if position_offset is None else next_position + position_offset)[
                :, None
            ],
            use_cache=True,
            logits_to_keep=1,
            **{cache_argument: cache},
        ).logits[:, -1]

    tokens = torch.cat([input_ids, new_tokens[:, :steps]], dim=-1)
    return (tokens, finished) if return_finished else tokens


def _as_hooked(vlm: HookedVLM | nn.Module) -> HookedVLM:
    """A HookedVLM as given, or one wrapped around a plain Hugging Face model (weights shared)."""
    from vis_steer_lens.hooked_vlm import HookedVLM

    return vlm if isinstance(vlm, HookedVLM) else HookedVLM(vlm)


def _infer_attention_mask(input_ids: torch.Tensor, eos: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """generate's rule without a mask: pad tokens are padding, unless the pad id is also an EOS id."""
    if pad_token_id in eos.tolist() or not bool((input_ids == pad_token_id).any()):
        return torch.ones_like(input_ids)
    return (input_ids != pad_token_id).long()


@functools.cache
def _cache_argument(model_class: type) -> str:
    """The KV cache's keyword: ``cache`` in recent transformers, ``past_key_values`` before.

    The wrong one need not raise: it can be swallowed as an extra keyword, leaving each step
    without the cache.
    """
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"
