"""Registries that plug-ins fill: image-source kinds, image generators, ground truths, segmenters.

The core names no plug-in. A plug-in is a package with an entry point in the group
``vis_steer_lens.plugins`` pointing at a ``register()`` function, which fills these registries
(and :func:`vis_steer_lens.explain.register_prompt`). The toy world is one:
``vis_steer_lens.toy.plugin:register``. Entry points are loaded the first time a registry
lookup misses, so ``import vis_steer_lens`` loads no plug-in.

A user's own plug-in declares, in its ``pyproject.toml``::

    [project.entry-points."vis_steer_lens.plugins"]
    my_world = "my_package.plugin:register"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

#: Entry-point group of plug-ins.
ENTRY_POINT_GROUP = "vis_steer_lens.plugins"

T = TypeVar("T")
_loaded: set[str] = set()


class UnknownPluginItemError(KeyError):
    """A name no registered plug-in provides."""

    def __str__(self) -> str:
        return str(self.args[0])


def load_plugins() -> list[str]:
    """Run every installed plug-in's ``register()`` once; returns the names loaded now.

    Raises:
        RuntimeError: If a plug-in fails to load (naming it).
    """
    from importlib.metadata import entry_points

    loaded = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _loaded:
            continue
        _loaded.add(entry.name)
        try:
            entry.load()()
        except Exception as err:  # a broken plug-in must say which it is
            raise RuntimeError(
                f"The vis_steer_lens plug-in {entry.name!r} ({entry.value}) failed to load: {err}"
            ) from err
        loaded.append(entry.name)
    return loaded


class Registry(Generic[T]):
    """Named items of one kind, filled by plug-ins.

    Args:
        kind: What the items are, for error messages (``"image source kind"``).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T, overwrite: bool = False) -> T:
        """Add ``item`` under ``name``; an existing name needs ``overwrite=True``."""
        if name in self._items and not overwrite and self._items[name] is not item:
            raise ValueError(f"A {self.kind} named {name!r} is already registered; pass overwrite=True.")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """The item registered as ``name``, loading plug-ins if it is not there yet.

        Raises:
            UnknownPluginItemError: Naming the registered items.
        """
        if name not in self._items:
            load_plugins()
        if name not in self._items:
            raise UnknownPluginItemError(
                f"Unknown {self.kind} {name!r}; registered: {sorted(self._items) or 'none'}. A plug-in "
                f"registers more (entry-point group {ENTRY_POINT_GROUP!r}); is it installed (pip install -e .)?"
            )
        return self._items[name]

    def names(self) -> list[str]:
        """Registered names (after loading the installed plug-ins)."""
        load_plugins()
        return sorted(self._items)


#: Image-source kinds: ``kind -> opener(spec: dict) -> ImageSource`` (see ``open_image_source``).
IMAGE_SOURCES: Registry[Callable[[dict[str, Any]], Any]] = Registry("image source kind")
#: Text-to-image generators: ``name -> factory(**kwargs) -> ImageGenerator``.
GENERATORS: Registry[Callable[..., Any]] = Registry("image generator")
#: Ground truths: ``name -> loader(table: pandas.DataFrame) -> GroundTruth``.
GROUND_TRUTHS: Registry[Callable[[Any], Any]] = Registry("ground truth")
#: Ground-truth builders: ``name -> builder(model, sae, *, n_images, seed, progress) -> GroundTruth``
#: (what ``vis-steer-lens evaluate --scorer ground_truth`` runs for the world's own model).
GROUND_TRUTH_BUILDERS: Registry[Callable[..., Any]] = Registry("ground truth builder")
#: Segmenters of the segmentation IoU: ``name -> factory(**kwargs) -> Segmenter``
#: (see :class:`vis_steer_lens.evaluate.segmentation_iou.Segmenter`).
SEGMENTERS: Registry[Callable[..., Any]] = Registry("segmenter")
#: SAEs at other layers of a world's own model, for ``sweep --axis layer``:
#: ``name -> provider(model, *, exclude, cache_dir, total_training_samples, progress) -> {hook: SAE}``
#: (trained once and kept in ``cache_dir``, or loaded from it).
LAYER_SAES: Registry[Callable[..., Any]] = Registry("layer SAE provider")

__all__ = [
    "ENTRY_POINT_GROUP",
    "GENERATORS",
    "GROUND_TRUTHS",
    "GROUND_TRUTH_BUILDERS",
    "IMAGE_SOURCES",
    "LAYER_SAES",
    "Registry",
    "SEGMENTERS",
    "UnknownPluginItemError",
    "load_plugins",
]
