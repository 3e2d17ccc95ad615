"""From a raw generation to an explanation: strip the asked-for prefix and keep one sentence."""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from transformers import StoppingCriteria

_SENTENCE_END = re.compile(r"(?<=[.!?])(\s|$)|\n")


def clean_explanation(raw: str, prefix: str, strip: Iterable[str] = ("*",)) -> str:
    """The explanation inside a raw answer.

    Removes boilerplate strings, the answer prefix (case-insensitive, wherever it starts) and
    anything after the first sentence, then trailing punctuation.

    Example:
        >>> clean_explanation("**The highlighted element in the image is a red circle.** Extra.",
        ...                   "The highlighted element in the image is a")
        'red circle'
    """
    text = raw
    for junk in strip:
        text = text.replace(junk, "")
    text = text.strip()
    at = text.lower().find(prefix.lower())
    if at >= 0:
        text = text[at + len(prefix) :]
    text = text.strip()
    match = _SENTENCE_END.search(text)
    if match:
        text = text[: match.start()]
    return text.strip().rstrip(".!?,;:").strip()


class SentenceEndStop(StoppingCriteria):
    """Stop each row of a batched ``generate`` once its answer holds a finished sentence.

    A row is done when its last token ends a sentence (``.``, ``!``, ``?``) or a line and the
    text so far already contains an explanation (so a preamble line such as "Here is a
    description:" does not end it). Rows finish independently.
    """

    def __init__(self, tokenizer, prompt_length: int, prefix: str, strip: Iterable[str] = ("*",)):
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.prefix = prefix
        self.strip = tuple(strip)
        self.candidates = _sentence_end_token_ids(tokenizer)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        last = input_ids[:, -1]
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        maybe = torch.isin(last, self.candidates.to(last.device)).nonzero().flatten().tolist()
        for row in maybe:
            text = self.tokenizer.decode(input_ids[row, self.prompt_length :], skip_special_tokens=True)
            done[row] = bool(clean_explanation(text, self.prefix, self.strip))
        return done


_CANDIDATE_CACHE: dict[int, torch.Tensor] = {}


def _sentence_end_token_ids(tokenizer) -> torch.Tensor:
    """Ids of tokens that end a sentence or a line (cached per tokenizer)."""
    key = id(tokenizer)
    if key not in _CANDIDATE_CACHE:
        vocab = tokenizer.get_vocab()
        ids = [
            i
            for token, i in vocab.items()
            if token.rstrip().endswith((".", "!", "?")) or "\n" in token or token in ("<0x0A>", "Ċ")
        ]
        _CANDIDATE_CACHE[key] = torch.tensor(sorted(ids), dtype=torch.long)
    return _CANDIDATE_CACHE[key]
