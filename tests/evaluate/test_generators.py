"""Image generators: the toy renderer, and DiffusersGenerator with a stand-in and a tiny real pipeline."""

from __future__ import annotations

import builtins
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from vis_steer_lens.evaluate import DiffusersGenerator, ImageGenerator
from vis_steer_lens.toy import ToyGenerator

from .tiny_models import tiny_clip_tokenizer, tiny_text_config


class FakePipeline:
    """Stand-in for a diffusers text-to-image pipeline: same call signature, images from the seed."""

    device = torch.device("cpu")

    def __init__(self):
        self.calls = []

    def __call__(
        self, prompt, num_images_per_prompt, num_inference_steps, guidance_scale, generator, **kwargs
    ):
        self.calls.append(
            dict(
                prompt=prompt,
                n=num_images_per_prompt,
                steps=num_inference_steps,
                cfg=guidance_scale,
                **kwargs,
            )
        )
        noise = torch.rand(num_images_per_prompt, 8, 8, 3, generator=generator)
        images = [Image.fromarray((x.numpy() * 255).astype(np.uint8)) for x in noise]
        return SimpleNamespace(images=images)


def arrays(images):
    return [np.asarray(image) for image in images]


def test_toy_generator_is_an_image_generator():
    generator = ToyGenerator()
    assert isinstance(generator, ImageGenerator)
    images = generator("a red circle", 3, seed=4)
    assert len(images) == 3 and images[0].size == (64, 64)
    assert all("red" in scene.concepts() for scene in generator.scenes("a red circle", 3, seed=4))


def test_diffusers_generator_wiring_with_a_stand_in():
    pipe = FakePipeline()
    generator = DiffusersGenerator(
        "some/model", num_inference_steps=5, guidance_scale=3.0, device="cpu", pipeline=pipe, height=8
    )
    assert isinstance(generator, ImageGenerator) and "some/model" in generator.name
    first = generator("a dog", 2, seed=11)
    assert pipe.calls[-1] == dict(prompt="a dog", n=2, steps=5, cfg=3.0, height=8)
    assert len(first) == 2 and first[0].mode == "RGB"
    same = generator("a dog", 2, seed=11)
    other = generator("a dog", 2, seed=12)
    assert all(np.array_equal(a, b) for a, b in zip(arrays(first), arrays(same), strict=True))
    assert not np.array_equal(arrays(first)[0], arrays(other)[0])


def test_missing_diffusers_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_diffusers(name, *args, **kwargs):
        if name == "diffusers" or name.startswith("diffusers."):
            raise ImportError("No module named 'diffusers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_diffusers)
    generator = DiffusersGenerator("stabilityai/stable-diffusion-3.5-medium", device="cpu")
    with pytest.raises(ImportError, match=r"vis_steer_lens\[diffusion\]"):
        generator("a cat", 1, seed=0)


def test_tiny_real_diffusers_pipeline(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=4,
        attention_head_dim=4,
    )
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
    )
    tokenizer = tiny_clip_tokenizer(tmp_path)
    text_encoder = CLIPTextModel(CLIPTextConfig(**tiny_text_config(len(tokenizer)))).eval()
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=diffusers.DDIMScheduler(clip_sample=False, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    generator = DiffusersGenerator(
        "tiny-sd", num_inference_steps=2, device="cpu", pipeline=pipe, height=16, width=16
    )
    images = generator("a red circle", 2, seed=3)
    assert len(images) == 2 and images[0].size == (16, 16) and images[0].mode == "RGB"
    again = generator("a red circle", 2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(arrays(images), arrays(again), strict=True))

    # The loading path: a saved folder goes through AutoPipelineForText2Image.from_pretrained.
    pipe.save_pretrained(tmp_path / "tiny-sd")
    loaded = DiffusersGenerator(
        str(tmp_path / "tiny-sd"), num_inference_steps=2, device="cpu", height=16, width=16
    )
    reloaded = loaded("a red circle", 2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(arrays(images), arrays(reloaded), strict=True))
