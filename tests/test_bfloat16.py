"""bf16 as a first-class dtype: the generator, the pipeline (`.to`, `from_pretrained(dtype=...)`), the CLI and the CLIP
image features, each within a stated tolerance of fp32.

The tolerance, on images in [0, 1] drawn from the same seeds: max |bf16 - fp32| <= 0.03 (3% of the range) and mean
|bf16 - fp32| <= 0.004. bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2%); these bounds leave room for the
rounding of the text encoder and three generator levels (the fusion's softmax accumulates in fp32).
"""

import numpy as np
import PIL.Image
import pytest
import torch

from hf_stagegan import StageGANGenerator, StageGANPipeline
from hf_stagegan.cli import main
from hf_stagegan.encoders import encode_images, prepare_images

from .conftest import tiny_config
from .test_fast_paths import randomise_norms
from .test_pipeline import LONG, SHORT

MAX_ERROR, MEAN_ERROR = 0.03, 0.004
PROMPTS = [SHORT, LONG] * 4  # 8 images, one seed each


def seeds(count=8):
    return [torch.Generator().manual_seed(seed) for seed in range(count)]


def assert_close_to_float32(images, expected):
    error = np.abs(np.asarray(images, dtype=np.float64) - np.asarray(expected, dtype=np.float64))
    assert error.max() <= MAX_ERROR and error.mean() <= MEAN_ERROR, (error.max(), error.mean())


@pytest.mark.parametrize("fusion_type", ["attention", "memory"])
def test_bfloat16_generator_is_close_to_float32(fusion_type):
    torch.manual_seed(0)
    config = tiny_config(fusion_type=fusion_type, initializer_range=0.1)
    generator = StageGANGenerator(config).eval()
    randomise_norms(generator)
    mask = torch.ones(8, 6, dtype=torch.bool)
    mask[::2, 4:] = False
    inputs = {
        "noise": torch.randn(8, config.z_dim),
        "sentence_embeds": torch.randn(8, config.text_embed_dim),
        "word_embeds": torch.randn(8, 6, config.text_embed_dim),
    }
    with torch.inference_mode():
        expected = generator(**inputs, word_mask=mask).images
        generator.to(torch.bfloat16)
        images = generator(**{k: v.bfloat16() for k, v in inputs.items()}, word_mask=mask).images
    for image, reference in zip(images, expected):
        assert image.dtype == torch.bfloat16 and reference.std() > 0.1  # images, not a constant
        assert_close_to_float32((image.float() + 1) / 2, (reference + 1) / 2)


@pytest.mark.parametrize("how", ["to", "from_pretrained_dtype", "from_pretrained_torch_dtype"])
def test_bfloat16_pipeline_matches_float32(pipe, saved, how):
    expected = pipe(PROMPTS, generator=seeds(), output_type="np").images
    if how == "to":
        pipe = pipe.to(torch.bfloat16)
    elif how == "from_pretrained_dtype":
        pipe = StageGANPipeline.from_pretrained(saved, dtype=torch.bfloat16)
    else:
        with pytest.warns(FutureWarning, match="torch_dtype"):  # diffusers' older name still works
            pipe = StageGANPipeline.from_pretrained(saved, torch_dtype=torch.bfloat16)
    assert pipe.image_generator.dtype == torch.bfloat16 and pipe.text_encoder.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in pipe.image_generator.parameters())
    pipe.set_progress_bar_config(disable=True)

    out = pipe(PROMPTS, generator=seeds(), output_type="np", return_all_levels=True)
    assert out.images.dtype == np.float32  # "np" and "pil" outputs are the usual types
    assert_close_to_float32(out.images, expected)
    pt = pipe(PROMPTS, generator=seeds(), output_type="pt").images
    assert pt.dtype == torch.bfloat16  # "pt" keeps the pipeline's dtype, as in diffusers
    images = pipe(PROMPTS, generator=seeds()).images
    assert_close_to_float32(np.stack([np.asarray(image) for image in images]) / 255, expected)


def test_a_seed_draws_the_same_noise_in_every_dtype(pipe):
    for truncation in (None, 0.8):
        noise = pipe.prepare_latents(4, torch.float32, "cpu", seeds(4), truncation_threshold=truncation)
        rounded = pipe.prepare_latents(4, torch.bfloat16, "cpu", seeds(4), truncation_threshold=truncation)
        assert rounded.dtype == torch.bfloat16
        assert torch.equal(rounded, noise.bfloat16())


def test_generate_command_with_bfloat16(saved, tmp_path):
    grids = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / f"{dtype}.png"
        args = ["generate", SHORT, LONG, "--model", str(saved), "--num-images", "2", "--dtype", dtype, "--out", str(out)]
        assert main(args) == 0
        grids[dtype] = np.asarray(PIL.Image.open(out), dtype=np.float64) / 255
    assert grids["float32"].std() > 0.05
    assert_close_to_float32(grids["bfloat16"], grids["float32"])


def test_clip_image_features_of_bfloat16_images(clip_model):
    images = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pixels = prepare_images(images.bfloat16(), 32)  # resized with antialiasing, which has no bf16 CPU kernel
    assert pixels.dtype == torch.bfloat16
    # bf16 rounding of (x + 1) / 2 and of the result, divided by CLIP's std (~0.27): a few hundredths at most
    torch.testing.assert_close(pixels.float(), prepare_images(images.bfloat16().float(), 32), rtol=0, atol=0.03)
    with torch.autocast("cpu", torch.bfloat16):
        features = encode_images(clip_model, images.bfloat16())
    expected = encode_images(clip_model, images)
    assert torch.nn.functional.cosine_similarity(features.image_embeds.float(), expected.image_embeds).min() > 0.99
