"""From a raw generation to an explanation: strip the asked-for prefix and keep one sentence."""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from transformers import StoppingCriteria

_SENTENCE_END = re.compile(r"(?<=[.!?])(\s|$)|\n")

#: Flags an answer can carry (the ``flag`` column of explanation rows; ``None`` for a clean answer).
#: ``"dead"``: the feature never fired, so it was not explained (no model call).
FLAGS = ("repetition", "unfinished", "empty", "dead")
#: Longest run of words that :func:`collapse_repetitions` looks for ("cyan circle cyan circle").
_MAX_REPEATED_WORDS = 3


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


def collapse_repetitions(text: str) -> tuple[str, bool]:
    """``text`` with each run of a repeated word (or group of up to three words) kept once.

    Degenerate steered answers repeat a word until the token budget ends ("yellow yellow yellow
    circle"); a scorer that draws the text rewards the repetition, so it is cleaned here and the
    row flagged. Case is ignored when comparing words.

    Example:
        >>> collapse_repetitions("yellow yellow yellow circle")
        ('yellow circle', True)
        >>> collapse_repetitions("large cyan circle")
        ('large cyan circle', False)

    Returns:
        ``(cleaned text, whether anything repeated)``.
    """
    words = text.split()
    repeated = False
    for size in range(1, _MAX_REPEATED_WORDS + 1):
        kept: list[str] = []
        for word in words:
            kept.append(word)
            if len(kept) >= 2 * size and [w.lower() for w in kept[-size:]] == [
                w.lower() for w in kept[-2 * size : -size]
            ]:
                del kept[-size:]
                repeated = True
        words = kept
    return " ".join(words), repeated


def explanation_and_flag(
    raw: str, prefix: str, strip: Iterable[str] = ("*",), finished: bool = True
) -> tuple[str, str | None]:
    """The explanation inside a raw answer (:func:`clean_explanation`, repetitions collapsed) and
    its flag: ``"empty"``, ``"unfinished"`` (cut off at the token budget), ``"repetition"``, or
    ``None`` for a clean answer."""
    explanation, repeated = collapse_repetitions(clean_explanation(raw, prefix, strip))
    if not explanation:
        return explanation, "empty"
    if not finished:
        return explanation, "unfinished"
    return explanation, "repetition" if repeated else None


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
