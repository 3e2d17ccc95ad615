"""Vision-only towers: CLIP ViT, SigLIP (and SigLIP 2's fixed-resolution checkpoints), DINOv2 and
DINOv2 with registers, as adapters that have no language model.

A tower adapter describes the tower to :class:`~vis_steer_lens.HookedViT` as a VLM adapter does, and
says it has no language model (:attr:`VisionTowerAdapter.has_language_model` is ``False``): what only
reads the tower (mining, Top-k displays, the dashboard, SAE training) works on it, and what needs a
language model (:class:`~vis_steer_lens.HookedVLM`, steering, the hybrid) raises
:class:`~vis_steer_lens.families.NoLanguageModelError`.

Which adapter a tower gets:

* ``HookedViT.from_pretrained("facebook/dinov2-with-registers-base")`` (any checkpoint of a bare tower
  or of CLIP / SigLIP with their text towers) picks the tower adapter by ``config.model_type``.
* ``HookedViT.from_hf(tower)`` on a bare ``Dinov2Model`` / ``Dinov2WithRegistersModel`` picks the DINOv2
  adapters. A bare ``CLIPVisionModel`` or ``SiglipVisionModel`` is also the tower class LLaVA and Gemma 3
  hold, and keeps getting those families' adapters; ``HookedViT.from_hf(tower, family="clip")`` (or
  ``"siglip"``) names the vision-only one.

SigLIP 2 comes in two forms: its fixed-resolution checkpoints (``google/siglip2-base-patch16-224``,
...) are ``SiglipModel`` checkpoints and load here as ``"siglip"``; the NaFlex ones
(``Siglip2VisionModel``, patches of any aspect ratio with a padding mask) have no adapter.

DINOv2 puts a class token and, with registers, R register tokens before the patches
(``cfg.n_prefix_tokens == 1 + R``, ``cfg.n_register_tokens == R``); registers take no position
embedding. Every block scales its attention and MLP outputs (layer scale), and the last hidden state
is normalised (``ln_final``). DINOv2 fits its position embeddings to the input size
(``cfg.interpolate_positions``): the released checkpoints hold 518-px (37 x 37) positions and their
processor crops 224 px.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from vis_steer_lens.adapters.base import VLMAdapter
from vis_steer_lens.adapters.gemma3 import ENCODER_LAYER_SITES, Gemma3Adapter
from vis_steer_lens.adapters.llava import LlavaAdapter
from vis_steer_lens.families import NoLanguageModelError
from vis_steer_lens.hook_names import HookNameMap
from vis_steer_lens.hooked_vit import BlockParts, HookedViTConfig, TowerParts

_NO_BRIDGE = "transformer-lens 3.9 has no TransformerBridge for this vision-only tower"

#: A bare CLIP or SigLIP vision tower, in Hugging Face module paths (``vision_model.`` inside the
#: two-tower ``CLIPModel`` / ``SiglipModel``).
CLIP_SIGLIP_TOWER_HOOK_NAMES = HookNameMap(
    hf_prefix="",
    hf_block="encoder.layers.{layer}",
    hf_block_sites=ENCODER_LAYER_SITES,
    hf_other={"hook_pos_embed": "embeddings.position_embedding"},
    hf_extra_prefixes=("vision_model.",),
    bridge_note=_NO_BRIDGE,
)

#: DINOv2's blocks: the attention's and the MLP's outputs reach the residual stream through the layer
#: scales, whose outputs are ``hook_attn_out`` and ``hook_mlp_out``.
DINOV2_HOOK_NAMES = HookNameMap(
    hf_prefix="",
    hf_block="encoder.layer.{layer}",
    hf_block_sites={
        "attn.hook_q": "attention.q_proj",
        "attn.hook_k": "attention.k_proj",
        "attn.hook_v": "attention.v_proj",
        "hook_attn_out": "layer_scale1",
        "hook_mlp_out": "layer_scale2",
        "hook_resid_post": "",
    },
    hf_extra_prefixes=("dinov2.", "dinov2_with_registers."),
    bridge_note=_NO_BRIDGE,
)


class VisionTowerAdapter(VLMAdapter):
    """An adapter of a vision tower with no language model (CLIP, SigLIP, DINOv2).

    Everything about the VLM around a tower (projector, prompts, image tokens) raises
    :class:`~vis_steer_lens.families.NoLanguageModelError`. Checkpoints may hold the tower alone or
    beside a text tower (CLIP, SigLIP); only the vision weights are read.
    """

    has_language_model: ClassVar[bool] = False
    model_class: ClassVar[str] = ""

    def describe(self) -> str:
        return f"vision-only towers {', '.join(self.tower_model_types)}"

    def _no_language_model(self, what: str) -> NoLanguageModelError:
        return NoLanguageModelError(
            f"{what} needs a vision-language model, and the {self.name} tower has no language model. Mining, "
            "Top-k displays (with any VLM as the explainer), the dashboard and SAE training work on a tower; "
            "for steering or the hybrid, use a VLM (HookedVLM.from_pretrained(...))."
        )

    # ---- the whole model: a tower is its own model
    def tower(self, model: nn.Module) -> nn.Module:
        """The bare tower: ``model`` itself, or the vision tower of a two-tower ``CLIPModel`` / ``SiglipModel``."""
        return getattr(model, "vision_model", model) if not self.supports_tower(model) else model

    def projector(self, model: nn.Module) -> nn.Module:
        raise self._no_language_model("A projector to a language model")

    def image_token_id(self, model: nn.Module) -> int:
        raise self._no_language_model("An image token")

    def prompt_inputs(self, processor: Any, images: list[list[Any]], texts: list[str]) -> Any:
        raise self._no_language_model("A prompt")

    def load_model(self, name_or_path: str, *, device=None, dtype=None, revision=None) -> nn.Module:
        raise self._no_language_model(f"HookedVLM.from_pretrained({name_or_path!r})")

    def load_processor(self, name_or_path: str, *, revision: str | None = None) -> Any:
        """The image processor saved with the checkpoint (``AutoImageProcessor``)."""
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(name_or_path, revision=revision)

    # ---- loading the tower
    def load_tower(self, name_or_path: str, *, device=None, dtype=None, revision=None) -> nn.Module:
        """Load the tower from a checkpoint of the tower alone, of a two-tower model (CLIP, SigLIP:
        its vision weights) or of a model with a head (DINOv2 classifiers), through transformers'
        own ``from_pretrained`` of :attr:`tower_class` (which knows the checkpoints' legacy key names)."""
        tower = self._tower_class_object().from_pretrained(
            name_or_path, revision=revision, dtype=dtype or "auto", attn_implementation="sdpa"
        )
        return tower.to(device or "cpu").eval()


class ClipTowerAdapter(VisionTowerAdapter):
    """CLIP ViT alone (``CLIPVisionModel``; ``openai/clip-vit-large-patch14``, OpenCLIP-converted
    ``laion/CLIP-ViT-*``): a class token, a pre-LayerNorm (``ln_pre``), quick-GELU MLPs.

    The last hidden state has no final norm (CLIP's ``post_layernorm`` acts on the pooled class
    token only), as in LLaVA's tower.
    """

    name: ClassVar[str] = "clip"
    tower_class: ClassVar[str] = "CLIPVisionModel"
    vision_prefixes: ClassVar[tuple[str, ...]] = ("vision_model.",)
    layout: ClassVar[dict] = LlavaAdapter.layout
    model_types: ClassVar[tuple[str, ...]] = ("clip", "clip_vision_model")
    tower_model_types: ClassVar[tuple[str, ...]] = ("clip_vision_model",)
    model_name_markers: ClassVar[tuple[str, ...]] = ("clip-vit", "clip_vit", "clip")
    hook_name_map: ClassVar[HookNameMap] = CLIP_SIGLIP_TOWER_HOOK_NAMES

    # The tower is LLaVA's CLIP: the same description, under this family's name and hook names.
    tower_config = LlavaAdapter.tower_config
    tower_parts = LlavaAdapter.tower_parts


class SiglipTowerAdapter(VisionTowerAdapter):
    """SigLIP alone (``SiglipVisionModel``; ``google/siglip-so400m-patch14-384`` and SigLIP 2's
    fixed-resolution checkpoints such as ``google/siglip2-base-patch16-224``): no class token, a
    final LayerNorm (``ln_final``); the attention-pooling head is not part of the residual stream."""

    name: ClassVar[str] = "siglip"
    tower_class: ClassVar[str] = "SiglipVisionModel"
    vision_prefixes: ClassVar[tuple[str, ...]] = ("vision_model.",)
    model_types: ClassVar[tuple[str, ...]] = ("siglip", "siglip_vision_model")
    tower_model_types: ClassVar[tuple[str, ...]] = ("siglip_vision_model",)
    model_name_markers: ClassVar[tuple[str, ...]] = ("siglip", "siglip2")
    hook_name_map: ClassVar[HookNameMap] = CLIP_SIGLIP_TOWER_HOOK_NAMES

    # The tower is Gemma 3's SigLIP.
    tower_config = Gemma3Adapter.tower_config
    tower_parts = Gemma3Adapter.tower_parts


class _PositionEmbedding(nn.Module):
    """Holds DINOv2's ``position_embeddings`` ``[1, 1 + patches, d]`` as ``weight`` (shared)."""

    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.weight = weight


class Dinov2TowerAdapter(VisionTowerAdapter):
    """DINOv2 (``Dinov2Model``; ``facebook/dinov2-small|base|large|giant``): a class token, layer
    scale in every block, a final LayerNorm, position embeddings fitted to the input size; the
    giant model's SwiGLU MLPs are gated MLPs here (``mlp.hook_pre`` the gate)."""

    name: ClassVar[str] = "dinov2"
    tower_class: ClassVar[str] = "Dinov2Model"
    vision_prefixes: ClassVar[tuple[str, ...]] = ("dinov2.",)
    layout: ClassVar[dict] = dict(
        n_prefix_tokens=1, layer_scale=True, interpolate_positions=True, act_fn="gelu"
    )
    model_types: ClassVar[tuple[str, ...]] = ("dinov2",)
    tower_model_types: ClassVar[tuple[str, ...]] = ("dinov2",)
    model_name_markers: ClassVar[tuple[str, ...]] = ("dinov2",)
    hook_name_map: ClassVar[HookNameMap] = DINOV2_HOOK_NAMES

    def _n_registers(self, config: Any) -> int:
        return int(getattr(config, "num_register_tokens", 0) or 0)

    def tower_config(self, tower: nn.Module, model_name: str) -> HookedViTConfig:
        cfg = tower.config
        gated = bool(getattr(cfg, "use_swiglu_ffn", False))
        n_registers = self._n_registers(cfg)
        return HookedViTConfig(
            n_layers=cfg.num_hidden_layers,
            d_model=cfg.hidden_size,
            n_heads=cfg.num_attention_heads,
            d_head=cfg.hidden_size // cfg.num_attention_heads,
            d_mlp=tower.encoder.layer[0].mlp.fc2.in_features
            if not gated
            else tower.encoder.layer[0].mlp.down_proj.in_features,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            n_channels=cfg.num_channels,
            layer_norm_eps=cfg.layer_norm_eps,
            n_prefix_tokens=1 + n_registers,
            n_register_tokens=n_registers,
            interpolate_positions=True,
            layer_scale=True,
            act_fn="silu" if gated else cfg.hidden_act,
            gated_mlp=gated,
            family=self.name,
            model_name=model_name,
            hf_prefix=self.hook_name_map.hf_prefix,
        )

    def tower_parts(self, tower: nn.Module) -> TowerParts:
        blocks = []
        for layer in tower.encoder.layer:
            attention, mlp = layer.attention, layer.mlp
            gated = hasattr(mlp, "gate_proj")
            blocks.append(
                BlockParts(
                    ln1=layer.norm1,
                    ln2=layer.norm2,
                    q=attention.q_proj,
                    k=attention.k_proj,
                    v=attention.v_proj,
                    o=attention.o_proj,
                    mlp_in=mlp.up_proj if gated else mlp.fc1,
                    mlp_out=mlp.down_proj if gated else mlp.fc2,
                    mlp_gate=mlp.gate_proj if gated else None,
                    act_fn=mlp.act_fn if gated else mlp.activation_fn,
                    ls1=layer.layer_scale1.lambda1,
                    ls2=layer.layer_scale2.lambda1,
                    attn_scale=attention.scaling,
                )
            )
        embeddings = tower.embeddings
        return TowerParts(
            patch_embed=embeddings.patch_embeddings.projection,
            pos_embed=_PositionEmbedding(embeddings.position_embeddings),
            blocks=blocks,
            final_norm=tower.layernorm,
            prefix_tokens=embeddings.cls_token,
            register_tokens=getattr(embeddings, "register_tokens", None)
            if self._n_registers(tower.config)
            else None,
            # Called with the class token and the patches (the registers left out), as transformers does.
            interpolate_pos_encoding=embeddings.interpolate_pos_encoding,
        )


class Dinov2WithRegistersTowerAdapter(Dinov2TowerAdapter):
    """DINOv2 with registers (``Dinov2WithRegistersModel``; ``facebook/dinov2-with-registers-*``):
    DINOv2 with R learned register tokens after the class token (``cfg.n_prefix_tokens == 1 + R``),
    which take no position embedding."""

    name: ClassVar[str] = "dinov2_with_registers"
    tower_class: ClassVar[str] = "Dinov2WithRegistersModel"
    vision_prefixes: ClassVar[tuple[str, ...]] = ("dinov2_with_registers.",)
    layout: ClassVar[dict] = dict(
        n_prefix_tokens=5, n_register_tokens=4, layer_scale=True, interpolate_positions=True, act_fn="gelu"
    )
    model_types: ClassVar[tuple[str, ...]] = ("dinov2_with_registers",)
    tower_model_types: ClassVar[tuple[str, ...]] = ("dinov2_with_registers",)
    model_name_markers: ClassVar[tuple[str, ...]] = (
        "dinov2-with-registers",
        "dinov2_with_registers",
        "dinov2-reg",
    )


#: The vision-only tower adapters, in registration order.
TOWER_ADAPTERS = (
    SiglipTowerAdapter(),
    ClipTowerAdapter(),
    Dinov2TowerAdapter(),
    Dinov2WithRegistersTowerAdapter(),
)

__all__ = [
    "CLIP_SIGLIP_TOWER_HOOK_NAMES",
    "DINOV2_HOOK_NAMES",
    "TOWER_ADAPTERS",
    "ClipTowerAdapter",
    "Dinov2TowerAdapter",
    "Dinov2WithRegistersTowerAdapter",
    "SiglipTowerAdapter",
    "VisionTowerAdapter",
]
