"""Word-level test tokenizers with a family's special tokens, and a release's special-token ids fitted
into a smaller vocabulary (for :mod:`vis_steer_lens.testing`'s tiny and random models)."""

from __future__ import annotations

from collections.abc import Mapping

from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

_WORDS = (
    "the a an is are what in on of image images describe highlighted element shared all these this "
    "it one clear sentence red green blue yellow square circle large small top left right bottom "
    "picture object colour color shape nothing white black gray user model assistant system"
).split()
_PUNCTUATION = [".", ",", "?", "!", ":", "-", "'"]


def word_tokenizer(
    special: dict[str, str],
    extra: dict[str, str],
    chat_template: str,
    add_bos: bool,
    *,
    token_ids: Mapping[str, int] | None = None,
    vocab_size: int | None = None,
):
    """A word-level fast tokenizer with a family's special tokens (newlines and punctuation are tokens).

    Args:
        special: ``pad_token``, ``eos_token``, ``unk_token`` (and ``bos_token``) → token.
        extra: Further special tokens by attribute name; ``<name>_id`` attributes are set too.
        chat_template: The Jinja chat template.
        add_bos: Whether plain calls prepend the BOS token.
        token_ids: Fixed ids of some special tokens (token → id), e.g. a release's (see
            :func:`fit_token_ids`); the other tokens take the free ids in order. By default the
            special tokens come first, then newline, punctuation and words.
        vocab_size: Fill the vocabulary up to this many ids with ``<unused{id}>`` words, so every
            id a model of that vocabulary emits decodes.

    Raises:
        ValueError: If ``vocab_size`` cannot hold the tokens or a fixed id lies outside it.
    """
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys([*special.values(), *extra.values()]))
    words = sorted({variant for word in _WORDS for variant in (word, word.capitalize())})
    ordinary = ["\n", *_PUNCTUATION, *words]
    token_ids = dict(token_ids or {})
    needed = len(specials) + len(ordinary) + len(set(token_ids) - set(specials))
    size = vocab_size or max(needed, max(token_ids.values(), default=-1) + 1)
    if needed > size or any(not 0 <= i < size for i in token_ids.values()):
        raise ValueError(
            f"A vocabulary of {size} ids cannot hold {needed} tokens with the fixed ids {token_ids}; "
            f"use vocab_size >= {needed} and ids below it."
        )
    vocabulary: list[str | None] = [None] * size
    for token, index in token_ids.items():
        vocabulary[index] = token
    free = [index for index, token in enumerate(vocabulary) if token is None]
    placed = [token for token in specials if token not in token_ids] + ordinary
    for index, token in zip(free, placed, strict=False):
        vocabulary[index] = token
    for index in free[len(placed) :]:
        vocabulary[index] = f"<unused{index}>"
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


def fit_token_ids(token_ids: Mapping[str, int], vocab_size: int) -> dict[str, int]:
    """A release's special-token ids fitted into a vocabulary of ``vocab_size`` ids.

    Ids below ``vocab_size`` are kept; the others move to the highest ids not taken, in their
    released order (Gemma 3 at 4096 ids: ``<start_of_image>`` 255999 → 4093, ``<end_of_image>``
    256000 → 4094, ``<image_soft_token>`` 262144 → 4095; ``<start_of_turn>`` stays 105).

    Raises:
        ValueError: If the vocabulary has fewer ids than there are tokens.
    """
    if len(token_ids) > vocab_size:
        raise ValueError(f"{len(token_ids)} special tokens do not fit a vocabulary of {vocab_size} ids.")
    fitted = {token: index for token, index in token_ids.items() if index < vocab_size}
    moved = sorted((index, token) for token, index in token_ids.items() if index >= vocab_size)
    taken = set(fitted.values())
    top = [index for index in range(vocab_size - 1, -1, -1) if index not in taken][: len(moved)]
    for (_, token), index in zip(moved, sorted(top), strict=True):
        fitted[token] = index
    return fitted


__all__ = ["fit_token_ids", "word_tokenizer"]
