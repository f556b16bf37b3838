import inspect

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

from hf_stagegan import StageGANConfig, StageGANDiscriminator, StageGANGenerator
from hf_stagegan.modeling_stagegan import UnconditionalDiscriminator, mean_word_embedding

from .conftest import tiny_config


class StageGANModelTester:
    """Builds a config and matching random inputs; `create_and_check_*` assert exact shapes."""

    def __init__(self, batch_size=2, num_words=5, **config_overrides):
        self.batch_size = batch_size
        self.num_words = num_words
        self.config_overrides = config_overrides

    def get_config(self):
        return tiny_config(**self.config_overrides)

    def prepare_config_and_inputs(self):
        config = self.get_config()
        generator = torch.Generator().manual_seed(0)
        batch, words, dim = self.batch_size, self.num_words, config.text_embed_dim
        word_mask = torch.ones(batch, words, dtype=torch.bool)
        word_mask[0, 3:] = False  # first prompt is shorter: padding at the end
        inputs = {
            "noise": torch.randn(batch, config.z_dim, generator=generator),
            "sentence_embeds": torch.randn(batch, dim, generator=generator),
            "word_embeds": torch.randn(batch, words, dim, generator=generator),
            "word_mask": word_mask,
        }
        return config, inputs

    def create_and_check_generator(self, config, inputs):
        model = StageGANGenerator(config).eval()
        with torch.no_grad():
            out = model(**inputs)
        sides = config.stage_resolutions
        assert [tuple(image.shape) for image in out.images] == [(self.batch_size, 3, side, side) for side in sides]
        assert [tuple(h.shape) for h in out.hidden_states] == [
            (self.batch_size, config.generator_channels, side, side) for side in sides
        ]
        for image in out.images:
            assert image.min() >= -1 and image.max() <= 1
        return model, out

    def create_and_check_discriminator(self, config, inputs, images):
        model = StageGANDiscriminator(config).eval()
        logits = [
            model(images[0], level=1).logits,
            model(images[1], level=2, sentence_embeds=inputs["sentence_embeds"]).logits,
            model(images[2], level=3, word_embeds=inputs["word_embeds"], word_mask=inputs["word_mask"]).logits,
        ]
        assert [tuple(logit.shape) for logit in logits] == [(self.batch_size,)] * 3
        return model


@pytest.mark.parametrize("fusion_type", ["attention", "memory"])
def test_tiny_shapes_at_every_level(fusion_type):
    tester = StageGANModelTester(fusion_type=fusion_type)
    config, inputs = tester.prepare_config_and_inputs()
    _, out = tester.create_and_check_generator(config, inputs)
    tester.create_and_check_discriminator(config, inputs, out.images)


def test_default_config_shapes():
    config = StageGANConfig()
    generator = StageGANGenerator(config).eval()
    with torch.no_grad():
        out = generator(noise=torch.randn(1, 100), sentence_embeds=torch.randn(1, 512), word_embeds=torch.randn(1, 7, 512))
    assert [tuple(image.shape) for image in out.images] == [(1, 3, 64, 64), (1, 3, 128, 128), (1, 3, 256, 256)]
    discriminator = StageGANDiscriminator(config).eval()
    assert discriminator(out.images[2], level=3, word_embeds=torch.randn(1, 7, 512)).logits.shape == (1,)


def test_generator_can_stop_after_level_one_or_two():
    config, inputs = StageGANModelTester().prepare_config_and_inputs()
    model = StageGANGenerator(config).eval()
    with torch.no_grad():
        full = model(**inputs).images
        level1 = model(noise=inputs["noise"], num_levels=1).images  # level 1 takes only noise
        level2 = model(noise=inputs["noise"], sentence_embeds=inputs["sentence_embeds"], num_levels=2).images
    assert len(level1) == 1 and len(level2) == 2
    torch.testing.assert_close(level1[0], full[0], rtol=0, atol=0)
    torch.testing.assert_close(level2[1], full[1], rtol=0, atol=0)


def test_level_one_ignores_text_and_text_changes_later_levels():
    config, inputs = StageGANModelTester().prepare_config_and_inputs()
    model = StageGANGenerator(config).eval()
    other = dict(inputs, sentence_embeds=torch.randn_like(inputs["sentence_embeds"]), word_embeds=torch.randn_like(inputs["word_embeds"]))
    with torch.no_grad():
        a, b = model(**inputs).images, model(**other).images
    assert torch.equal(a[0], b[0])
    assert not torch.allclose(a[1], b[1]) and not torch.allclose(a[2], b[2])


def test_padding_words_do_not_change_level_three():
    config, inputs = StageGANModelTester().prepare_config_and_inputs()
    generator = StageGANGenerator(config).eval()
    discriminator = StageGANDiscriminator(config).eval()
    changed = inputs["word_embeds"].clone()
    changed[0, 3:] = 100.0  # only padding positions of the first prompt
    with torch.no_grad():
        a = generator(**inputs).images[2]
        b = generator(**dict(inputs, word_embeds=changed)).images[2]
        d_a = discriminator(a, level=3, word_embeds=inputs["word_embeds"], word_mask=inputs["word_mask"]).logits
        d_b = discriminator(a, level=3, word_embeds=changed, word_mask=inputs["word_mask"]).logits
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(d_a, d_b)


def test_d1_takes_no_text():
    assert list(inspect.signature(UnconditionalDiscriminator.forward).parameters) == ["self", "images"]
    config, inputs = StageGANModelTester().prepare_config_and_inputs()
    discriminator = StageGANDiscriminator(config)
    with pytest.raises(ValueError, match=r"D1 does not take \['sentence_embeds'\]; it is conditioned on nothing"):
        discriminator(torch.zeros(2, 3, 16, 16), level=1, sentence_embeds=inputs["sentence_embeds"])
    with pytest.raises(ValueError, match=r"D2 does not take \['word_embeds'\]"):
        discriminator(torch.zeros(2, 3, 32, 32), level=2, sentence_embeds=inputs["sentence_embeds"], word_embeds=inputs["word_embeds"])


def test_d3_is_conditioned_on_the_mean_of_real_words():
    config, inputs = StageGANModelTester().prepare_config_and_inputs()
    words, mask = inputs["word_embeds"], inputs["word_mask"]
    expected = torch.stack([words[0, :3].mean(0), words[1].mean(0)])
    torch.testing.assert_close(mean_word_embedding(words, mask), expected)
    discriminator = StageGANDiscriminator(config).eval()
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    via_words = discriminator(images, level=3, word_embeds=words, word_mask=mask).logits
    via_mean = discriminator.level3(images, expected)
    torch.testing.assert_close(via_words, via_mean)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda g: g(noise=torch.randn(2, 99)), r"`noise` must have shape \(batch, z_dim=100\), got \(2, 99\)"),
        (lambda g: g(noise=torch.randn(2, 100), num_levels=4), "`num_levels` must be 1, 2 or 3, got 4"),
        (lambda g: g(noise=torch.randn(2, 100)), "`sentence_embeds` is required for this level, got None"),
        (
            lambda g: g(noise=torch.randn(2, 100), sentence_embeds=torch.randn(2, 8), num_levels=2),
            r"`sentence_embeds` must have shape \(batch, dim\) with batch=2 and dim=text_embed_dim=16, got \(2, 8\)",
        ),
        (
            lambda g: g(noise=torch.randn(2, 100), sentence_embeds=torch.randn(2, 16), word_embeds=torch.randn(2, 16)),
            r"`word_embeds` must have shape \(batch, num_words, dim\)",
        ),
        (
            lambda g: g(
                noise=torch.randn(2, 100), sentence_embeds=torch.randn(2, 16), word_embeds=torch.randn(2, 4, 16),
                word_mask=torch.ones(2, 5),
            ),
            r"`word_mask` must have shape \(2, 4\) \(batch, num_words\), got \(2, 5\)",
        ),
    ],
)
def test_generator_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call(StageGANGenerator(tiny_config()))


def test_discriminator_bad_inputs():
    discriminator = StageGANDiscriminator(tiny_config())
    with pytest.raises(ValueError, match=r"`images` for level 2 must have shape \(batch, 3, 32, 32\), got \(2, 3, 16, 16\)"):
        discriminator(torch.zeros(2, 3, 16, 16), level=2, sentence_embeds=torch.zeros(2, 16))
    with pytest.raises(ValueError, match="`level` must be 1, 2 or 3, got 0"):
        discriminator(torch.zeros(2, 3, 16, 16), level=0)
    with pytest.raises(ValueError, match="`sentence_embeds` is required"):
        discriminator(torch.zeros(2, 3, 32, 32), level=2)


@pytest.mark.parametrize("spectral_norm", [True, False])
def test_save_load_round_trip_identical_outputs(tmp_path, spectral_norm):
    config, inputs = StageGANModelTester(fusion_type="memory", discriminator_spectral_norm=spectral_norm).prepare_config_and_inputs()
    generator = StageGANGenerator(config).eval()
    discriminator = StageGANDiscriminator(config).eval()
    generator.save_pretrained(tmp_path / "generator")
    discriminator.save_pretrained(tmp_path / "discriminator")
    for folder in ("generator", "discriminator"):
        files = sorted(p.name for p in (tmp_path / folder).iterdir())
        assert files == ["config.json", "model.safetensors"]  # safetensors only, no pickle

    loaded_generator = AutoModel.from_pretrained(tmp_path / "generator").eval()
    loaded_discriminator = StageGANDiscriminator.from_pretrained(tmp_path / "discriminator").eval()
    assert type(loaded_generator) is StageGANGenerator
    assert isinstance(AutoConfig.from_pretrained(tmp_path / "discriminator"), StageGANConfig)

    with torch.no_grad():
        expected, actual = generator(**inputs).images, loaded_generator(**inputs).images
        for a, b in zip(expected, actual):
            assert torch.equal(a, b)
        d_args = dict(word_embeds=inputs["word_embeds"], word_mask=inputs["word_mask"])
        assert torch.equal(
            discriminator(expected[2], level=3, **d_args).logits, loaded_discriminator(expected[2], level=3, **d_args).logits
        )
    state = load_file(tmp_path / "discriminator" / "model.safetensors")
    assert any("parametrizations.weight.original" in key for key in state) == spectral_norm


def test_weights_are_initialised_from_config():
    config = tiny_config(initializer_range=0.05)
    generator = StageGANGenerator(config)
    weight = generator.level2.residual[0].block[0].conv.weight
    assert abs(weight.std().item() - 0.05) < 0.01
    discriminator = StageGANDiscriminator(config)
    original = discriminator.level1.to_logit.parametrizations.weight.original
    assert original.abs().max() > 0 and abs(original.std().item() - 0.05) < 0.03
