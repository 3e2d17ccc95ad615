"""Test-model builders: how :mod:`vis_steer_lens.testing` builds a family's tiny and random models.

Each family's adapter (:mod:`vis_steer_lens.adapters`) knows how to *run* its models; its
:class:`ModelBuilder` (here, outside the production code) knows how to *make* test ones: a tiny
random model with a working processor (:func:`vis_steer_lens.testing.tiny_vlm`) and the released
architectures with random weights (:func:`vis_steer_lens.testing.random_vlm`). Builders are
registered by family name, as adapters are (:func:`vis_steer_lens.register_adapter`).

A fourth family, registered with ``register_adapter(MyAdapter())``, gets test models by one
subclass registered here::

    from vis_steer_lens.testing import ModelBuilder, register_builder

    class MyBuilder(ModelBuilder):
        family = "my_family"  # the adapter's name
        released_configs = {"my-model-7b": {"vision_config": {...}, "text_config": {...}}}
        released_token_ids = {"<pad>": 0, "<image>": 32_000}
        test_tokens = (special, extra, chat_template, add_bos)  # as word_tokenizer takes them

        def build_tiny(self, *, vision_layers, text_width, **options):
            ...  # a tiny model and its processor (seed torch first)

        def _released_model_config(self, fields, ids, tokenizer):
            ...  # (config, processor) from a release's fields, cut

    register_builder(MyBuilder())

after which ``tiny_vlm("my_family")`` and ``random_vlm("my-model-7b")`` build it.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from vis_steer_lens.families import UnsupportedModelError, get_adapter
from vis_steer_lens.testing.tokenizers import fit_token_ids, word_tokenizer

if TYPE_CHECKING:
    from vis_steer_lens.adapters.base import VLMAdapter


class ModelBuilder:
    """Builds the test models of one family (the one its adapter is registered under).

    Attributes:
        family: The adapter's name (``"gemma3"``); the builder is registered under it.
        released_configs: Released models the family can build with random weights (see
            :func:`vis_steer_lens.testing.random_vlm`): name → the fields of its ``config.json``
            that define the architecture (``vision_config``, ``text_config`` and top-level ones).
        released_token_ids: The released tokenizer's special tokens and their ids.
        test_tokens: The test models' word-level tokenizer: ``(special, extra, chat_template,
            add_bos)`` as :func:`vis_steer_lens.testing.word_tokenizer` takes them.
    """

    family: ClassVar[str] = ""
    released_configs: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    released_token_ids: ClassVar[Mapping[str, int]] = {}
    test_tokens: ClassVar[tuple[dict[str, str], dict[str, str], str, bool]] = ({}, {}, "", False)

    @property
    def adapter(self) -> VLMAdapter:
        """The adapter registered under :attr:`family`."""
        return get_adapter(self.family)

    def build_tiny(self, *, vision_layers: int, text_width: int, **options: Any) -> tuple[nn.Module, Any]:
        """A tiny random model of the family and a working processor (see :mod:`vis_steer_lens.testing`).

        32x32 images in 8-pixel patches (16 patches), 4 soft tokens per image where the projector
        pools (16 where it maps each patch: LLaVA, PaliGemma), a word-level tokenizer with the
        family's special tokens and prompt structure. Seed torch first.
        """
        raise NotImplementedError(f"The {self.family} builder builds no tiny model.")

    def released_config(self, name: str) -> dict[str, Any]:
        """A copy of the released configuration ``name`` (see :attr:`released_configs`).

        Raises:
            KeyError: Naming the releases the family knows.
        """
        if name not in self.released_configs:
            raise KeyError(
                f"The {self.family} builder knows the releases {sorted(self.released_configs)}, got {name!r}."
            )
        return copy.deepcopy(dict(self.released_configs[name]))

    def random_config(
        self,
        name: str,
        *,
        n_vision_layers: int | None = None,
        n_text_layers: int | None = None,
        vocab_size: int | None = None,
    ) -> tuple[Any, Any]:
        """The Hugging Face config of a released model, its depth and vocabulary optionally cut, and
        a processor with the family's special tokens and chat structure at the real image size.

        The special tokens keep their released ids where the vocabulary holds them and move to its
        top otherwise (:func:`vis_steer_lens.testing.fit_token_ids`), in the tokenizer (a
        word-level one, :attr:`test_tokens`) and the config alike.
        """
        fields = self.released_config(name)
        vision, text = fields["vision_config"], fields["text_config"]
        for sub, layers in ((vision, n_vision_layers), (text, n_text_layers)):
            if layers is not None:
                if layers < 1:
                    raise ValueError(f"A model needs at least one layer per tower, got {layers}.")
                sub["num_hidden_layers"] = layers
        text["vocab_size"] = vocab_size or text["vocab_size"]
        ids = fit_token_ids(self.released_token_ids, text["vocab_size"])
        special, extra, chat_template, add_bos = self.test_tokens
        tokenizer = word_tokenizer(
            special, extra, chat_template, add_bos, token_ids=ids, vocab_size=text["vocab_size"]
        )
        return self._released_model_config(fields, ids, tokenizer)

    def _released_model_config(
        self, fields: dict[str, Any], ids: dict[str, int], tokenizer: Any
    ) -> tuple[Any, Any]:
        """``(config, processor)`` from a release's config ``fields`` (cut), its special tokens' ``ids``
        in that vocabulary and a tokenizer holding them."""
        raise NotImplementedError(f"The {self.family} builder builds no released model.")

    def build_random(
        self,
        name: str,
        *,
        n_vision_layers: int | None = None,
        n_text_layers: int | None = None,
        vocab_size: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ) -> tuple[nn.Module, Any]:
        """A released architecture with transformers' random init, built directly in ``dtype`` on
        ``device``, and its processor (see :mod:`vis_steer_lens.testing`). Seed torch first.

        The generation config stops at the family's end-of-turn tokens (the adapter's), as the
        releases' do.
        """
        from transformers import AutoModelForImageTextToText

        config, processor = self.random_config(
            name, n_vision_layers=n_vision_layers, n_text_layers=n_text_layers, vocab_size=vocab_size
        )
        with torch.device(device or "cpu"):
            model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
        self._finish_random(model)
        tokenizer = processor.tokenizer
        end_of_turn = list(self.adapter.end_of_turn_tokens)
        stop = [tokenizer.eos_token_id, *tokenizer.convert_tokens_to_ids(end_of_turn)]
        model.generation_config.eos_token_id = list(dict.fromkeys(stop))
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        return model.eval(), processor

    def _finish_random(self, model: nn.Module) -> None:
        """Family-specific changes to transformers' init of a random released model (none by default)."""


_BUILDERS: list[ModelBuilder] = []

#: The module that registers the shipped families' builders, loaded on the first lookup.
BUILTIN_BUILDERS_MODULE = "vis_steer_lens.testing"


def _builders() -> list[ModelBuilder]:
    """The registered builders, the shipped families' registered on first use."""
    importlib.import_module(BUILTIN_BUILDERS_MODULE)
    return _BUILDERS


def register_builder(builder: ModelBuilder) -> None:
    """Make a family's test models buildable; a later registration of the same family replaces the
    earlier one. New builders are listed before the ones registered earlier."""
    _BUILDERS[:] = [b for b in _BUILDERS if b.family != builder.family]
    _BUILDERS.insert(0, builder)


def builder_families() -> list[str]:
    """Names of the families a test-model builder is registered for."""
    return [b.family for b in _builders()]


def get_builder(family: str) -> ModelBuilder:
    """The test-model builder registered under ``family`` (e.g. ``"gemma3"``).

    Raises:
        UnsupportedModelError: Naming the families that have builders, and how to add one.
    """
    for builder in _builders():
        if builder.family == family:
            return builder
    raise UnsupportedModelError(
        f"No test-model builder for family {family!r}. Families with builders: "
        f"{', '.join(builder_families())}. Add one by subclassing "
        "vis_steer_lens.testing.ModelBuilder and calling vis_steer_lens.testing.register_builder."
    )


def redraw_linears_at_unit_gain(module: nn.Module) -> None:
    """Redraw every linear weight in ``module`` (in module order) at std ``in_features ** -0.5``: a
    projector at transformers' init (std 0.02) makes image tokens too faint for a random language
    model to answer differently per image."""
    with torch.no_grad():
        for linear in module.modules():
            if isinstance(linear, nn.Linear):
                linear.weight.normal_(std=linear.in_features**-0.5)


__all__ = [
    "redraw_linears_at_unit_gain",
    "ModelBuilder",
    "builder_families",
    "get_builder",
    "register_builder",
]
