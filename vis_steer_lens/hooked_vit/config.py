"""HookedViTConfig: what a vision tower is, described rather than assumed (shapes, prefix tokens,
norms, positions, attention layout), round-tripping through a dict."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: Norm kinds, as TransformerLens names them in ``cfg.normalization_type``.
NORM_TYPES = ("LN", "RMS")
#: How a tower encodes positions: added learned embeddings, or 2-D rotary embeddings in attention.
POSITIONAL_KINDS = ("absolute", "rotary_2d")


@dataclass
class HookedViTConfig:
    """Shape and layout of a vision tower, as HookedViT sees it.

    Round-trips through :meth:`to_dict` / :meth:`from_dict`. Besides the fields below it has
    the attributes TransformerLens' ``ActivationCache`` reads (``normalization_type``,
    ``attn_only``, ``device``, ``n_ctx``).

    Attributes:
        n_layers: Number of encoder blocks.
        d_model: Width of the residual stream.
        n_heads: Attention heads per block.
        d_head: Width of one head (``d_model // n_heads``).
        d_mlp: Hidden width of the MLP.
        image_size: Side of the (square) input image in pixels.
        patch_size: Side of one patch in pixels.
        n_channels: Colour channels of the input.
        layer_norm_eps: Epsilon of every norm.
        n_prefix_tokens: Tokens before the patches in the residual stream (1 for a class
            token, 0 for SigLIP, 1 + R for DINOv2 with R registers). Patch statistics, maps and
            steering skip them.
        n_register_tokens: How many of the prefix tokens are registers: the last
            ``n_register_tokens`` of them, after the class token. Registers take no position
            embedding (DINOv2 with registers).
        interpolate_positions: Whether the tower fits its position embeddings to every input size,
            as DINOv2 does (``image_size`` is then the size they were trained at, not the only one).
        norm_type: ``"LN"`` (LayerNorm) or ``"RMS"`` (RMSNorm) in the blocks.
        final_norm_type: Norm after the last block (``"LN"``, ``"RMS"``) or ``None`` (none).
        embed_norm_type: Norm of the embeddings before the first block (``"LN"``, ``"RMS"``; CLIP's
            pre-LayerNorm, hooked as ``ln_pre``) or ``None`` (none). ``blocks.0.hook_resid_pre`` is
            its output.
        layer_scale: Whether each block scales its attention and MLP outputs by learned
            per-channel factors before adding them to the residual stream.
        qk_norm: Whether queries and keys are normalised (over all heads together) before
            attention.
        act_fn: Name of the MLP activation (a key of ``transformers.activations.ACT2FN``).
        fused_qkv: Whether queries, keys and values come from one projection ``[3 * d_model, d_model]``
            (split into ``hook_q``/``hook_k``/``hook_v`` here).
        positional: ``"absolute"`` (learned position embeddings added after the patch embedding,
            ``hook_pos_embed``) or ``"rotary_2d"`` (2-D rotary embeddings of each patch's (row, col)
            applied to queries and keys, ``attn.hook_rot_q``/``attn.hook_rot_k``).
        rotary_theta: Base of the rotary frequencies.
        gated_mlp: Whether the MLP is gated (SwiGLU: ``W_out(act(W_gate x) * W_in x)``, with
            ``mlp.hook_pre`` the gate's pre-activation and ``mlp.hook_pre_linear`` the linear branch).
        packed: Whether images are packed into one sequence ``[1, tokens, d_model]`` (of any sizes;
            attention stays within each image) rather than one row per image.
        full_attention_blocks: Blocks that attend over the whole image; ``None`` for all. The other
            blocks attend within the geometry's windows (:attr:`ImageGeometry.window`).
        family: Model family of the adapter that built it (``"gemma3"``, ``"internvl3"``).
        model_name: Name or path the tower was loaded from (recorded in SAE metadata).
        hf_prefix: Prefix of the tower's modules inside the full Hugging Face model.
        attn_only: Always ``False`` (every block has an MLP); read by TransformerLens.
        device: Where the weights are; kept up to date by :class:`HookedViT`.
        extra: Free-form fields.
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    image_size: int
    patch_size: int
    n_channels: int = 3
    layer_norm_eps: float = 1e-6
    n_prefix_tokens: int = 0
    n_register_tokens: int = 0
    interpolate_positions: bool = False
    norm_type: str = "LN"
    final_norm_type: str | None = "LN"
    embed_norm_type: str | None = None
    layer_scale: bool = False
    qk_norm: bool = False
    act_fn: str = "gelu_pytorch_tanh"
    fused_qkv: bool = False
    positional: str = "absolute"
    rotary_theta: float = 10000.0
    gated_mlp: bool = False
    packed: bool = False
    full_attention_blocks: list[int] | None = None
    family: str = "gemma3"
    model_name: str = "unnamed"
    hf_prefix: str = ""
    attn_only: bool = False
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("norm_type", "final_norm_type", "embed_norm_type"):
            value = getattr(self, name)
            if value not in NORM_TYPES and not (name != "norm_type" and value is None):
                raise ValueError(f"HookedViTConfig.{name} must be one of {NORM_TYPES}, got {value!r}.")
        if self.positional not in POSITIONAL_KINDS:
            raise ValueError(
                f"HookedViTConfig.positional must be one of {POSITIONAL_KINDS}, got {self.positional!r}."
            )
        if self.full_attention_blocks is not None:
            self.full_attention_blocks = [int(i) for i in self.full_attention_blocks]
        if self.n_prefix_tokens < 0:
            raise ValueError(f"n_prefix_tokens must be >= 0, got {self.n_prefix_tokens}.")
        if not 0 <= self.n_register_tokens <= self.n_prefix_tokens:
            raise ValueError(
                f"n_register_tokens must be between 0 and n_prefix_tokens={self.n_prefix_tokens}, "
                f"got {self.n_register_tokens}."
            )

    @property
    def grid_size(self) -> int:
        """Patches along one side of the image."""
        return self.image_size // self.patch_size

    @property
    def n_patches(self) -> int:
        """Patch tokens per image (``grid_size ** 2``), not counting prefix tokens."""
        return self.grid_size**2

    @property
    def n_tokens(self) -> int:
        """Tokens in the residual stream: prefix tokens then patches."""
        return self.n_prefix_tokens + self.n_patches

    @property
    def n_ctx(self) -> int:
        """TransformerLens' name for :attr:`n_tokens`."""
        return self.n_tokens

    @property
    def normalization_type(self) -> str:
        """TransformerLens' name for :attr:`norm_type`."""
        return self.norm_type

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> HookedViTConfig:
        """Rebuild a config from :meth:`to_dict`'s output (unknown keys are rejected)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"Unknown HookedViTConfig fields {unknown}; known fields: {sorted(known)}.")
        return cls(**fields)
