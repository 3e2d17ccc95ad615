"""Tiny CLIP pieces built from configs in memory (no download): a tokenizer, a dual encoder, a text encoder."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def tiny_clip_tokenizer(folder: Path):
    """A CLIP BPE tokenizer over single characters (no merges): it tokenises any lower-case text."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz.,":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def tiny_text_config(vocab_size: int) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )


def tiny_clip(folder: Path):
    """A random 32-wide ``CLIPModel`` (32×32 images, 8-px patches) and its ``CLIPProcessor``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = tiny_clip_tokenizer(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    config = CLIPConfig(
        text_config=tiny_text_config(len(tokenizer)),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    return CLIPModel(config).eval(), CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def tiny_grounding_dino(folder: Path):
    """A random Grounding DINO (32-wide, a 4-stage Swin of width 8, 10 queries) and its processor
    over a 13-word BERT vocabulary, for 64-pixel images."""
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoProcessor,
        SwinConfig,
    )
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
        GroundingDinoImageProcessorPil,
    )

    torch.manual_seed(0)
    swin = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=2,
        out_features=["stage2", "stage3", "stage4"],
    )
    bert = BertConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=64,
    )
    config = GroundingDinoConfig(
        backbone_config=swin,
        text_config=bert,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=10,
        num_feature_levels=3,
        encoder_n_points=1,
        decoder_n_points=1,
        max_text_len=32,
    )
    model = GroundingDinoForObjectDetection(config).eval()
    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        ".",
        "cyan",
        "red",
        "circle",
        "a",
        "large",
        "small",
    ]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    images = GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 64})
    return model, GroundingDinoProcessor(image_processor=images, tokenizer=tokenizer)


def tiny_sam():
    """A random SAM (16-wide ViT, 64-pixel images, 16-pixel patches) and its processor."""
    from transformers import SamConfig, SamModel, SamProcessor
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    torch.manual_seed(0)
    config = SamConfig(
        vision_config=dict(
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            image_size=64,
            patch_size=16,
            output_channels=8,
            window_size=2,
            global_attn_indexes=[0],
            mlp_dim=16,
            num_pos_feats=4,
        ),
        prompt_encoder_config=dict(hidden_size=8, image_size=64, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(
            hidden_size=8, num_hidden_layers=1, num_attention_heads=2, mlp_dim=16, iou_head_hidden_dim=8
        ),
    )
    processor = SamProcessor(
        image_processor=SamImageProcessorPil(size={"longest_edge": 64}, pad_size={"height": 64, "width": 64})
    )
    return SamModel(config).eval(), processor
