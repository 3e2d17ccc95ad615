"""Splicing SAEs into a HookedViT or HookedVLM, in the manner of SAELens' HookedSAETransformer.

While an SAE is spliced at ``blocks.L.hook_resid_post``, the activation there is replaced by
the SAE's reconstruction (plus the reconstruction error, if asked), and the SAE's own hook
points appear under the hook's name: ``blocks.L.hook_resid_post.hook_sae_acts_post`` etc.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from sae_lens import SAE
from torch import nn
from transformer_lens.hook_points import HookPoint

from vis_steer_lens.hook_names import HookName
from vis_steer_lens.saes.validation import SAEModelMismatchError, check_sae_fits

# The SAE's hooks the splice re-exposes; error and output are the splice's own.
_SAE_HOOKS = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons")


class SplicedSAE(nn.Module):
    """Stands in for a HookPoint while an SAE is spliced there.

    The SAE is kept out of the module tree (so hook names carry no ``.sae.`` segment); its hook
    points are attached directly. Per-head activations ``[batch, patches, heads, d_head]`` are
    flattened for the SAE and restored afterwards.
    """

    def __init__(self, sae: SAE, hook_point: HookPoint, use_error_term: bool, hook: HookName):
        super().__init__()
        self.__dict__["sae"] = sae
        self.__dict__["hook"] = hook
        self.__dict__["original_hook_point"] = hook_point
        for name in _SAE_HOOKS:
            setattr(self, name, sae.hook_dict[name])
        self.hook_sae_error = HookPoint()
        self.hook_sae_output = HookPoint()
        self.use_error_term = use_error_term

    def forward(self, activation: torch.Tensor) -> torch.Tensor:
        x = self.hook.flatten(activation)
        feature_acts = self.sae.encode(x.to(self.sae.dtype))
        out = self.sae.decode(feature_acts)
        if self.use_error_term:
            with torch.no_grad(), _hooks_disabled(self.sae):
                # The error against a hook-free reconstruction, so that feature edits stay visible.
                clean = self.sae.decode(self.sae.encode(x.to(self.sae.dtype)))
                error = self.hook_sae_error(x - clean.to(x.dtype))
            out = out.to(x.dtype) + error
        out = self.hook_sae_output(out.to(activation.dtype))
        return self.hook.unflatten(out, activation)


@contextmanager
def _hooks_disabled(module: nn.Module) -> Iterator[None]:
    """Run ``module`` with the forward hooks of its hook points switched off."""
    hook_points = [m for m in module.modules() if isinstance(m, HookPoint)]
    saved = [hp._forward_hooks for hp in hook_points]
    try:
        for hp in hook_points:
            hp._forward_hooks = OrderedDict()
        yield
    finally:
        for hp, hooks in zip(hook_points, saved, strict=True):
            hp._forward_hooks = hooks


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


class SAESplicingMixin:
    """Adds ``add_sae``, ``reset_saes``, ``saes()``, ``run_with_saes`` and ``run_with_cache_with_saes``.

    Used by :class:`~vis_steer_lens.HookedViT` and :class:`~vis_steer_lens.HookedVLM`. SAEs are
    spliced into the vision tower; the hooks of the model they are called on are refreshed.
    """

    def _splice_roots(self) -> list[Any]:
        """HookedRootModules whose hook tables must be rebuilt after a splice (tower first)."""
        vision = getattr(self, "vision", None)
        return [vision, self] if vision is not None else [self]

    def _spliced(self) -> dict[str, SplicedSAE]:
        vit = self._splice_roots()[0]
        if "_spliced_saes" not in vit.__dict__:
            vit.__dict__["_spliced_saes"] = {}
        return vit.__dict__["_spliced_saes"]

    def _refresh_hooks(self) -> None:
        for root in self._splice_roots():
            root.setup()

    @property
    def acts_to_saes(self) -> dict[str, SAE]:
        """The SAEs spliced in now, by hook name."""
        return {name: splice.sae for name, splice in self._spliced().items()}

    def add_sae(self, sae: SAE, use_error_term: bool = False) -> None:
        """Splice an SAE in at its hook (``sae.cfg.metadata.hook_name``), until :meth:`reset_saes`.

        Args:
            sae: A ``sae_lens.SAE`` whose ``d_in`` fits the hook.
            use_error_term: Add the SAE's reconstruction error back, so that the model's outputs
                are unchanged unless the SAE's features are edited.

        Raises:
            SAEModelMismatchError: If the hook does not exist or its width is not ``d_in``.
        """
        vit = self._splice_roots()[0]
        hook_name = check_sae_fits(sae, vit)
        spliced = self._spliced()
        if hook_name in spliced:
            raise SAEModelMismatchError(f"An SAE is already spliced at {hook_name!r}; call reset_saes first.")
        hook_point = vit.get_submodule(hook_name)
        splice = SplicedSAE(sae, hook_point, use_error_term, vit.parse_hook_name(hook_name))
        _set_module(vit, hook_name, splice)
        spliced[hook_name] = vit.get_submodule(hook_name)
        self._refresh_hooks()

    def reset_saes(self, hook_names: Sequence[str] | None = None) -> None:
        """Remove spliced SAEs (all, or those at ``hook_names``), restoring the original hooks."""
        vit = self._splice_roots()[0]
        spliced = self._spliced()
        names = list(spliced) if hook_names is None else [vit.resolve_hook_name(n) for n in hook_names]
        for name in names:
            splice = spliced.pop(name, None)
            if splice is not None:
                splice.sae.reset_hooks()
                _set_module(vit, name, splice.original_hook_point)
        self._refresh_hooks()

    @contextmanager
    def saes(self, saes: Sequence[SAE] = (), *, use_error_term: bool = False) -> Iterator[Any]:
        """Context manager: splice SAEs in, and take them out again on exit (even on error).

        Example:
            >>> with vlm.saes([sae], use_error_term=True):  # doctest: +SKIP
            ...     logits, cache = vlm.run_with_cache(**inputs)
            >>> cache["blocks.2.hook_resid_post.hook_sae_acts_post"]  # doctest: +SKIP
        """
        added: list[str] = []
        try:
            for sae in saes:
                self.add_sae(sae, use_error_term=use_error_term)
                added.append(check_sae_fits(sae, self._splice_roots()[0]))
            yield self
        finally:
            self.reset_saes(added)

    def run_with_saes(
        self, *model_args: Any, saes: Sequence[SAE] = (), use_error_term: bool = False, **kwargs: Any
    ):
        """:meth:`forward` with SAEs spliced in for this call only."""
        with self.saes(saes, use_error_term=use_error_term):
            return self(*model_args, **kwargs)

    def run_with_cache_with_saes(
        self, *model_args: Any, saes: Sequence[SAE] = (), use_error_term: bool = False, **kwargs: Any
    ):
        """``run_with_cache`` with SAEs spliced in for this call only; the cache holds their hooks."""
        with self.saes(saes, use_error_term=use_error_term):
            return self.run_with_cache(*model_args, **kwargs)
