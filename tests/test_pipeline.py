"""StageGANPipeline on tiny random components: outputs, reproducibility, batch equivalence, truncation, input checks."""

import logging

import numpy as np
import PIL.Image
import pytest
import torch

from hf_stagegan import StageGANGenerator, StageGANPipeline, StageGANPipelineOutput
from hf_stagegan.encoders import TextFeatures, encode_text, text_encoder_from_clip, tokenize_prompts
from hf_stagegan.pipeline_stagegan import truncated_noise

from .conftest import tiny_config

SHORT, LONG = "a red bird", "this bird has a red body and black wings"


def make_pipeline(tokenizer, clip_model, seed=0, **config_overrides) -> StageGANPipeline:
    """A pipeline of a few KB: the conftest CLIP's text half and a 16/32/64 px generator."""
    torch.manual_seed(seed)
    # initializer_range 0.1 instead of DCGAN's 0.02: random weights that give images varying with noise and text
    generator = StageGANGenerator(tiny_config(**{"initializer_range": 0.1, **config_overrides})).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that eval-mode normalisation is exercised
        for module in generator.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    pipe = StageGANPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder_from_clip(clip_model), image_generator=generator
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def seeded(*seeds):
    return [torch.Generator().manual_seed(seed) for seed in seeds]


# ---------------------------------------------------------------------------------------------------------------------
# components


def test_text_dim_mismatch_is_rejected(tokenizer, clip_model):
    with pytest.raises(
        ValueError, match=r"projection_dim` \(16\) must equal `image_generator.config.text_embed_dim` \(8\)"
    ):
        make_pipeline(tokenizer, clip_model, text_embed_dim=8)


# ---------------------------------------------------------------------------------------------------------------------
# outputs


@pytest.mark.parametrize("output_type", ["pil", "np", "pt"])
def test_output_types_shapes_and_ranges(pipe, output_type):
    out = pipe(
        [SHORT, LONG], num_images_per_prompt=2, generator=torch.Generator().manual_seed(0), output_type=output_type
    )
    assert isinstance(out, StageGANPipelineOutput) and out.level_images is None
    images = out.images
    if output_type == "pil":
        assert len(images) == 4
        assert all(
            isinstance(image, PIL.Image.Image) and image.size == (64, 64) and image.mode == "RGB" for image in images
        )
        pixels = np.stack([np.asarray(image) for image in images])
        assert pixels.dtype == np.uint8 and pixels.std() > 0
    elif output_type == "np":
        assert isinstance(images, np.ndarray) and images.shape == (4, 64, 64, 3) and images.dtype == np.float32
        assert images.min() >= 0 and images.max() <= 1 and images.std() > 0
    else:
        assert isinstance(images, torch.Tensor) and images.shape == (4, 3, 64, 64) and images.dtype == torch.float32
        assert images.min() >= 0 and images.max() <= 1 and images.std() > 0


def test_pt_output_is_the_generator_image_mapped_to_unit_range(pipe, tokenizer):
    latents = torch.randn(2, 100, generator=torch.Generator().manual_seed(3))
    images = pipe([SHORT, LONG], latents=latents, output_type="pt").images

    inputs = tokenize_prompts(tokenizer, [SHORT, LONG])
    text = encode_text(pipe.text_encoder, inputs.input_ids, inputs.attention_mask)
    x3 = pipe.image_generator(noise=latents, **text).images[-1]  # [-1, 1]
    torch.testing.assert_close(images, (x3 + 1) / 2, rtol=0, atol=1e-6)


def test_all_levels(pipe):
    out = pipe(SHORT, generator=torch.Generator().manual_seed(0), output_type="pt", return_all_levels=True)
    assert [tuple(level.shape) for level in out.level_images] == [(1, 3, 16, 16), (1, 3, 32, 32), (1, 3, 64, 64)]
    assert torch.equal(out.level_images[-1], out.images)
    assert all(level.min() >= 0 and level.max() <= 1 for level in out.level_images)

    pil = pipe(SHORT, generator=torch.Generator().manual_seed(0), return_all_levels=True)
    assert [level[0].size for level in pil.level_images] == [(16, 16), (32, 32), (64, 64)]


def test_return_dict_false(pipe):
    (images,) = pipe(SHORT, generator=torch.Generator().manual_seed(0), output_type="pt", return_dict=False)
    final, levels = pipe(
        SHORT, generator=torch.Generator().manual_seed(0), output_type="pt", return_dict=False, return_all_levels=True
    )
    assert torch.equal(images, final) and len(levels) == 3


# ---------------------------------------------------------------------------------------------------------------------
# reproducibility


def test_same_seed_same_images_other_seed_other_images(pipe):
    def run(seed):
        return pipe([SHORT, LONG], generator=torch.Generator().manual_seed(seed), output_type="np").images

    first, again, other = run(0), run(0), run(1)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


def test_batch_with_generator_list_equals_prompts_one_by_one(pipe):
    # SHORT and LONG tokenize to different lengths: in the batch SHORT is padded, alone it is not; the word mask must
    # hide the padding from level 3's attention, and each image must only draw noise from its own generator.
    batch = pipe([SHORT, LONG], num_images_per_prompt=2, generator=seeded(0, 1, 2, 3), output_type="pt").images
    short = pipe(SHORT, num_images_per_prompt=2, generator=seeded(0, 1), output_type="pt").images
    long = pipe(LONG, num_images_per_prompt=2, generator=seeded(2, 3), output_type="pt").images
    # float32 sums over a different number of (zero-weighted) padded slots: equal up to rounding
    torch.testing.assert_close(batch, torch.cat([short, long]), rtol=0, atol=1e-5)


def test_latents_are_the_noise(pipe):
    latents = torch.randn(2, 100, generator=torch.Generator().manual_seed(5))
    from_latents = pipe(SHORT, num_images_per_prompt=2, latents=latents, output_type="pt").images
    from_generator = pipe(
        SHORT, num_images_per_prompt=2, generator=torch.Generator().manual_seed(5), output_type="pt"
    ).images
    torch.testing.assert_close(from_latents, from_generator, rtol=0, atol=0)


def test_prompt_embeds_give_the_same_images_as_the_prompt(pipe):
    text = pipe.encode_prompt([SHORT, LONG])
    assert isinstance(text, TextFeatures) and text.sentence_embeds.shape == (2, 16)
    from_embeds = pipe(prompt_embeds=text, num_images_per_prompt=2, generator=seeded(0, 1, 2, 3), output_type="pt")
    from_prompt = pipe([SHORT, LONG], num_images_per_prompt=2, generator=seeded(0, 1, 2, 3), output_type="pt")
    torch.testing.assert_close(from_embeds.images, from_prompt.images, rtol=0, atol=0)


def test_generation_runs_in_eval_mode_and_restores_the_mode(pipe):
    expected = pipe([SHORT, LONG], generator=torch.Generator().manual_seed(0), output_type="pt").images
    pipe.image_generator.train()
    pipe.image_generator.level1.project_norm.eval()  # a mixed state (e.g. a frozen norm) must survive too
    stats = {name: buffer.clone() for name, buffer in pipe.image_generator.named_buffers()}
    got = pipe([SHORT, LONG], generator=torch.Generator().manual_seed(0), output_type="pt").images
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # BatchNorm used running statistics
    assert pipe.image_generator.training and pipe.image_generator.level3.training and not pipe.text_encoder.training
    assert not pipe.image_generator.level1.project_norm.training
    for name, buffer in pipe.image_generator.named_buffers():
        assert torch.equal(buffer, stats[name]), name  # and did not update them


def test_to_dtype(pipe):
    latents = torch.randn(1, 100, generator=torch.Generator().manual_seed(0))
    expected = pipe(SHORT, latents=latents, output_type="pt").images
    pipe = pipe.to("cpu", torch.float64)
    assert pipe.image_generator.dtype == torch.float64 and pipe.text_encoder.dtype == torch.float64
    got = pipe(SHORT, latents=latents, output_type="pt").images
    assert got.dtype == torch.float64
    torch.testing.assert_close(got.float(), expected, rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------------
# truncation (BigGAN's trick: resample, do not clamp)


def test_truncated_noise_resamples_values_beyond_the_threshold():
    plain = torch.randn(64, 100, generator=torch.Generator().manual_seed(0))
    truncated = truncated_noise((64, 100), 0.5, generator=torch.Generator().manual_seed(0))
    assert truncated.abs().max() <= 0.5
    inside = plain.abs() <= 0.5
    assert torch.equal(truncated[inside], plain[inside])  # values within the threshold are kept as drawn
    assert not torch.isclose(truncated[~inside].abs(), torch.tensor(0.5)).any()  # the rest are redrawn, not clamped
    assert torch.equal(truncated, truncated_noise((64, 100), 0.5, generator=torch.Generator().manual_seed(0)))


def test_truncated_noise_with_generator_list_is_per_row():
    rows = truncated_noise((3, 100), 0.3, generator=seeded(0, 1, 2))
    alone = torch.cat([truncated_noise((1, 100), 0.3, generator=seeded(seed)) for seed in (0, 1, 2)])
    assert torch.equal(rows, alone) and rows.abs().max() <= 0.3


def test_pipeline_truncation(pipe):
    def run(threshold, generator):
        return pipe([SHORT, LONG], truncation_threshold=threshold, generator=generator, output_type="pt").images

    truncated = run(0.5, seeded(0, 1))
    torch.testing.assert_close(truncated, run(0.5, seeded(0, 1)), rtol=0, atol=0)
    assert (truncated - run(None, seeded(0, 1))).abs().max() > 1e-3
    expected_noise = truncated_noise((2, 100), 0.5, generator=seeded(0, 1))
    torch.testing.assert_close(
        truncated, pipe([SHORT, LONG], latents=expected_noise, output_type="pt").images, rtol=0, atol=0
    )


# ---------------------------------------------------------------------------------------------------------------------
# input checks


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({}, ValueError, r"Provide either `prompt` or `prompt_embeds`; got `prompt=None`"),
        ({"prompt": ""}, ValueError, r"`prompt` must be a non-empty string, got ''"),
        ({"prompt": "   "}, ValueError, r"`prompt` must be a non-empty string, got '   '"),
        ({"prompt": []}, ValueError, r"`prompt` must contain at least one prompt, got \[\]"),
        ({"prompt": [SHORT, ""]}, ValueError, r"`prompt\[1\]` must be a non-empty string, got ''"),
        ({"prompt": 42}, TypeError, r"`prompt` has to be of type `str` or `list\[str\]`, got int: 42"),
        ({"prompt": [SHORT, 7]}, TypeError, r"`prompt\[1\]` has to be of type `str`, got int: 7"),
        ({"prompt": SHORT, "num_images_per_prompt": 0}, ValueError, r"`num_images_per_prompt` must be >= 1, got 0"),
        ({"prompt": SHORT, "num_images_per_prompt": -2}, ValueError, r"`num_images_per_prompt` must be >= 1, got -2"),
        (
            {"prompt": SHORT, "num_images_per_prompt": 1.5},
            TypeError,
            r"`num_images_per_prompt` has to be an int, got float: 1.5",
        ),
        (
            {"prompt": SHORT, "output_type": "latent"},
            ValueError,
            r"`output_type` must be one of \['pil', 'np', 'pt'\], got 'latent'",
        ),
        (
            {"prompt": [SHORT, LONG], "latents": torch.zeros(2, 99)},
            ValueError,
            r"`latents` must have shape \(2, 100\) \(batch \* num_images_per_prompt, z_dim\), got \(2, 99\)",
        ),
        (
            {"prompt": SHORT, "num_images_per_prompt": 2, "latents": torch.zeros(1, 100)},
            ValueError,
            r"`latents` must have shape \(2, 100\).*got \(1, 100\)",
        ),
        ({"prompt": SHORT, "latents": [[0.0] * 100]}, TypeError, r"`latents` has to be a torch.Tensor, got list"),
        (
            {"prompt": [SHORT, LONG], "generator": [torch.Generator()] * 3},
            ValueError,
            r"list of generators of length 3, but requested an effective batch size of 2",
        ),
        (
            {"prompt": SHORT, "truncation_threshold": 0.0},
            ValueError,
            r"`truncation_threshold` must be a finite number > 0, got 0.0",
        ),
        (
            {"prompt": SHORT, "truncation_threshold": "1"},
            TypeError,
            r"`truncation_threshold` has to be a number, got '1'",
        ),
        (
            {"prompt": SHORT, "truncation_threshold": 1.0, "latents": torch.zeros(1, 100)},
            ValueError,
            r"`truncation_threshold` \(1.0\) only applies to sampled noise; got `latents` too",
        ),
        ({"prompt_embeds": torch.zeros(1, 16)}, TypeError, r"`prompt_embeds` has to be a `TextFeatures`.*got Tensor"),
        (
            {"prompt_embeds": TextFeatures(sentence_embeds=torch.zeros(1, 8))},
            ValueError,
            r"`prompt_embeds.sentence_embeds` must have shape \(batch, 16\), got \(1, 8\)",
        ),
    ],
)
def test_bad_inputs_raise_naming_argument_and_value(pipe, kwargs, error, message):
    with pytest.raises(error, match=message):
        pipe(**kwargs)


def test_prompt_and_prompt_embeds_together_are_rejected(pipe):
    with pytest.raises(ValueError, match=r"Cannot forward both `prompt` \('a red bird'\) and `prompt_embeds`"):
        pipe(SHORT, prompt_embeds=pipe.encode_prompt(SHORT))


def test_long_prompt_is_truncated_with_a_warning_naming_the_dropped_text(pipe, tokenizer, caplog):
    # 19 words, one token each; the tokenizer keeps 16 tokens: start, 14 words, end
    kept = "this bird has a red body and black wings and a small blue bird"
    prompt = kept + " has a red body"
    assert tokenizer.model_max_length == 16
    with caplog.at_level(logging.WARNING, logger="hf_stagegan.pipeline_stagegan"):
        truncated = pipe(prompt, generator=torch.Generator().manual_seed(0), output_type="pt").images
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'has a red body'" in warnings[0] and "16 tokens" in warnings[0]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hf_stagegan.pipeline_stagegan"):
        expected = pipe(kept, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert not caplog.records  # a prompt within the limit logs nothing
    torch.testing.assert_close(truncated, expected, rtol=0, atol=0)


def test_cpu_offload_sequence_names_the_model_components(pipe):
    models = {name for name, component in pipe.components.items() if isinstance(component, torch.nn.Module)}
    assert pipe.model_cpu_offload_seq.split("->") == ["text_encoder", "image_generator"]
    assert set(pipe.model_cpu_offload_seq.split("->")) == models
