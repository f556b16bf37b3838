import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.nn.utils import parametrize
from transformers import AutoConfig, AutoModel

from hf_stagegan import StageGANConfig, StageGANDiscriminator, StageGANGenerator
from hf_stagegan.modeling_stagegan import UnconditionalDiscriminator, mean_word_embedding

from .conftest import TINY_TEXT_DIM, tiny_config


def upsample_bilinear(images):
    return F.interpolate(images, scale_factor=2, mode="bilinear", align_corners=False)


class StageGANGeneratorModelTester:
    """
    transformers-style model tester: a tiny config, matching seeded inputs, and `create_and_check_*` methods that assert
    exact shapes. `run` calls the model on all its inputs and returns one output per call, so that the conformance
    checks below are written once for both models.
    """

    model_class = StageGANGenerator

    def __init__(self, batch_size=2, num_words=5, **config_overrides):
        self.batch_size = batch_size
        self.num_words = num_words
        # initializer_range 0.1 rather than DCGAN's 0.02: images far from 0, so that tolerances mean something
        self.config_overrides = {"initializer_range": 0.1, **config_overrides}

    def get_config(self, **overrides):
        return tiny_config(**{**self.config_overrides, **overrides})

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

    def run(self, model, inputs, **kwargs):
        return [model(**inputs, **kwargs)]

    def results(self, output):
        """The tensors a user reads from one output (the images), before any hidden states."""
        return list(output.images)

    def expected_hidden_shapes(self, config):
        return [[(self.batch_size, config.generator_channels, side, side) for side in config.stage_resolutions]]

    def create_and_check_model(self, config, inputs):
        model = self.model_class(config).eval()
        with torch.no_grad():
            out = model(**inputs)
        sides = config.stage_resolutions
        assert [tuple(image.shape) for image in out.images] == [(self.batch_size, 3, side, side) for side in sides]
        assert out.hidden_states is None  # config.output_hidden_states defaults to False
        for image in out.images:
            assert image.min() >= -1 and image.max() <= 1
        return model, out

    def create_and_check_hidden_states_are_documented_features(self, model, inputs):
        """
        Each level's hidden state is exactly what its `to_image` head turned into that level's image; with
        `image_skip`, what its head added to the previous level's pre-tanh image, upsampled x2.
        """
        with torch.no_grad():
            out = model(**inputs, output_hidden_states=True)
        logits = None
        for level, hidden, image in zip(model.levels, out.hidden_states, out.images):
            own = level.to_image[0](hidden)  # the head's convolution, before its tanh
            logits = own if logits is None or not model.config.image_skip else own + upsample_bilinear(logits)
            torch.testing.assert_close(torch.tanh(logits), image, rtol=0, atol=0)


class StageGANDiscriminatorModelTester(StageGANGeneratorModelTester):
    """D1, D2 and D3 on real-looking images of their level's size, with the text each one takes."""

    model_class = StageGANDiscriminator

    def prepare_config_and_inputs(self):
        config, text = super().prepare_config_and_inputs()
        generator = torch.Generator().manual_seed(1)
        images = [torch.rand(self.batch_size, 3, side, side, generator=generator) * 2 - 1 for side in config.stage_resolutions]
        inputs = {
            1: {"images": images[0], "level": 1},
            2: {"images": images[1], "level": 2, "sentence_embeds": text["sentence_embeds"]},
            3: {"images": images[2], "level": 3, "word_embeds": text["word_embeds"], "word_mask": text["word_mask"]},
        }
        return config, inputs

    def run(self, model, inputs, **kwargs):
        return [model(**inputs[level], **kwargs) for level in (1, 2, 3)]

    def results(self, output):
        return [output.logits] + ([] if output.unconditional_logits is None else [output.unconditional_logits])

    def expected_hidden_shapes(self, config):
        shapes = []
        for level, side in enumerate(config.stage_resolutions, start=1):
            ndf = config.level_discriminator_channels(level)
            num_downsamplings = int(math.log2(side // 4))
            maps = [(self.batch_size, ndf * min(2**i, 8), side >> (i + 1), side >> (i + 1)) for i in range(num_downsamplings)]
            shapes.append(maps + ([maps[-1]] if level > 1 else []))  # D2 / D3 add the joint image-text features
        return shapes

    def create_and_check_model(self, config, inputs):
        model = self.model_class(config).eval()
        with torch.no_grad():
            outputs = self.run(model, inputs)
        assert [tuple(out.logits.shape) for out in outputs] == [(self.batch_size,)] * 3
        assert all(out.hidden_states is None for out in outputs)
        return model, outputs

    def create_and_check_hidden_states_are_documented_features(self, model, inputs):
        """The last hidden state is what the level's logit convolution reads."""
        with torch.no_grad():
            outputs = self.run(model, inputs, output_hidden_states=True)
        for level, out in zip(model.levels, outputs):
            torch.testing.assert_close(level.to_logit(out.hidden_states[-1]).flatten(), out.logits, rtol=0, atol=0)


@pytest.mark.parametrize("fusion_type", ["attention", "memory"])
def test_tiny_shapes_at_every_level(fusion_type):
    tester = StageGANGeneratorModelTester(fusion_type=fusion_type)
    config, inputs = tester.prepare_config_and_inputs()
    _, out = tester.create_and_check_model(config, inputs)
    discriminator = StageGANDiscriminator(config).eval()
    d_inputs = StageGANDiscriminatorModelTester(fusion_type=fusion_type).prepare_config_and_inputs()[1]
    for level, image in zip((1, 2, 3), out.images):  # the discriminators take the generator's images
        assert discriminator(**dict(d_inputs[level], images=image)).logits.shape == (tester.batch_size,)


def test_default_config_shapes():
    config = StageGANConfig()
    generator = StageGANGenerator(config).eval()
    with torch.no_grad():
        out = generator(noise=torch.randn(1, 100), sentence_embeds=torch.randn(1, 512), word_embeds=torch.randn(1, 7, 512))
    assert [tuple(image.shape) for image in out.images] == [(1, 3, 64, 64), (1, 3, 128, 128), (1, 3, 256, 256)]
    discriminator = StageGANDiscriminator(config).eval()
    assert discriminator(out.images[2], level=3, word_embeds=torch.randn(1, 7, 512)).logits.shape == (1,)


def test_generator_can_stop_after_level_one_or_two():
    config, inputs = StageGANGeneratorModelTester().prepare_config_and_inputs()
    model = StageGANGenerator(config).eval()
    with torch.no_grad():
        full = model(**inputs).images
        level1 = model(noise=inputs["noise"], num_levels=1).images  # level 1 takes only noise
        level2 = model(noise=inputs["noise"], sentence_embeds=inputs["sentence_embeds"], num_levels=2).images
    assert len(level1) == 1 and len(level2) == 2
    torch.testing.assert_close(level1[0], full[0], rtol=0, atol=0)
    torch.testing.assert_close(level2[1], full[1], rtol=0, atol=0)


@pytest.mark.parametrize("image_skip", [False, True])
def test_image_skip_levels_draw_corrections_to_the_previous_image(image_skip):
    config, inputs = StageGANGeneratorModelTester(image_skip=image_skip).prepare_config_and_inputs()
    model = StageGANGenerator(config).eval()
    with torch.no_grad():
        drawn = model(**inputs, output_hidden_states=True)
        for level in model.levels[1:]:
            level.to_image[0].weight.zero_()  # heads of levels 2 and 3 that draw nothing (the conv has no bias)
        passed_on = model(**inputs).images
    assert not torch.allclose(drawn.images[2], passed_on[2])
    if image_skip:  # x1, upsampled twice before its tanh, is what reaches x3
        x1_logits = model.level1.to_image[0](drawn.hidden_states[0])
        torch.testing.assert_close(passed_on[2], torch.tanh(upsample_bilinear(upsample_bilinear(x1_logits))))
        assert passed_on[2].std() > 0.05
    else:  # each level draws alone: a flat grey x3
        assert torch.equal(passed_on[2], torch.zeros_like(passed_on[2]))
    assert torch.equal(passed_on[0], drawn.images[0])  # level 1 as it was


def test_level_one_ignores_text_and_text_changes_later_levels():
    config, inputs = StageGANGeneratorModelTester().prepare_config_and_inputs()
    model = StageGANGenerator(config).eval()
    other = dict(inputs, sentence_embeds=torch.randn_like(inputs["sentence_embeds"]), word_embeds=torch.randn_like(inputs["word_embeds"]))
    with torch.no_grad():
        a, b = model(**inputs).images, model(**other).images
    assert torch.equal(a[0], b[0])
    assert not torch.allclose(a[1], b[1]) and not torch.allclose(a[2], b[2])


def test_padding_words_do_not_change_level_three():
    config, inputs = StageGANGeneratorModelTester().prepare_config_and_inputs()
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
    assert list(inspect.signature(UnconditionalDiscriminator.forward).parameters) == ["self", "images", "output_hidden_states"]
    config, inputs = StageGANGeneratorModelTester().prepare_config_and_inputs()
    discriminator = StageGANDiscriminator(config)
    with pytest.raises(ValueError, match=r"D1 does not take \['sentence_embeds'\]; it is conditioned on nothing"):
        discriminator(torch.zeros(2, 3, 16, 16), level=1, sentence_embeds=inputs["sentence_embeds"])
    with pytest.raises(ValueError, match=r"D2 does not take \['word_embeds'\]"):
        discriminator(torch.zeros(2, 3, 32, 32), level=2, sentence_embeds=inputs["sentence_embeds"], word_embeds=inputs["word_embeds"])


def test_d3_is_conditioned_on_the_mean_of_real_words():
    config, inputs = StageGANGeneratorModelTester().prepare_config_and_inputs()
    words, mask = inputs["word_embeds"], inputs["word_mask"]
    expected = torch.stack([words[0, :3].mean(0), words[1].mean(0)])
    torch.testing.assert_close(mean_word_embedding(words, mask), expected)
    discriminator = StageGANDiscriminator(config).eval()
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    via_words = discriminator(images, level=3, word_embeds=words, word_mask=mask).logits
    via_mean = discriminator.level3(images, expected)  # the per-level module the training loop calls
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


@pytest.mark.parametrize(
    "spectral_norm, channels", [(True, 8), (False, 8), ([False, True, True], [16, 8, 8])], ids=["sn", "no-sn", "per-level"]
)
def test_save_load_round_trip_identical_outputs(tmp_path, spectral_norm, channels):
    config, inputs = StageGANGeneratorModelTester(
        fusion_type="memory", discriminator_spectral_norm=spectral_norm, discriminator_channels=channels
    ).prepare_config_and_inputs()
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

    for model, loaded in ((generator, loaded_generator), (discriminator, loaded_discriminator)):
        saved_state, loaded_state = model.state_dict(), loaded.state_dict()
        assert saved_state.keys() == loaded_state.keys()
        assert all(torch.equal(saved_state[key], loaded_state[key]) for key in saved_state)  # bit-identical weights

    # Outputs only up to float32 rounding: BLAS kernels chosen by memory alignment make two models with identical
    # weights differ in the last bits now and then (seen: 6e-11 on images of 1e-5).
    with torch.no_grad():
        expected, actual = generator(**inputs).images, loaded_generator(**inputs).images
        for a, b in zip(expected, actual):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        d_args = dict(word_embeds=inputs["word_embeds"], word_mask=inputs["word_mask"])
        torch.testing.assert_close(
            discriminator(expected[2], level=3, **d_args).logits,
            loaded_discriminator(expected[2], level=3, **d_args).logits,
            rtol=1e-5,
            atol=1e-6,
        )
    state = load_file(tmp_path / "discriminator" / "model.safetensors")
    per_level = spectral_norm if isinstance(spectral_norm, list) else [spectral_norm] * 3
    for level, normed in enumerate(per_level, start=1):
        assert any(k.startswith(f"level{level}.") and "parametrizations.weight.original" in k for k in state) == normed


def test_weights_are_initialised_from_config():
    config = tiny_config(initializer_range=0.05)
    generator = StageGANGenerator(config)
    weight = generator.level2.residual[0].block[0].conv.weight
    assert abs(weight.std().item() - 0.05) < 0.01
    discriminator = StageGANDiscriminator(config)
    original = discriminator.level1.to_logit.parametrizations.weight.original
    assert original.abs().max() > 0 and abs(original.std().item() - 0.05) < 0.03


# ---------------------------------------------------------------------------------------------------------------------
# Conformance: the checks of transformers' ModelTesterMixin that apply to an image GAN, written for both models


def select(inputs, index):
    """Row `index` of every batched tensor in (nested) model inputs, keeping the batch dimension."""
    if isinstance(inputs, dict):
        return {key: select(value, index) for key, value in inputs.items()}
    return inputs[index : index + 1] if isinstance(inputs, torch.Tensor) else inputs


def cast(inputs, dtype):
    if isinstance(inputs, dict):
        return {key: cast(value, dtype) for key, value in inputs.items()}
    return inputs.to(dtype) if isinstance(inputs, torch.Tensor) and inputs.is_floating_point() else inputs


def save_without(model, folder, drop) -> set[str]:
    """Saves `model` to `folder` minus the keys for which `drop(key)` holds (a partial checkpoint); returns them."""
    model.save_pretrained(folder)
    path = folder / "model.safetensors"
    state = load_file(path)
    dropped = {key for key in state if drop(key)}
    save_file({key: value for key, value in state.items() if key not in dropped}, path, metadata={"format": "pt"})
    return dropped


def assert_power_iterations_match_weights(model):
    """Each spectral norm's sigma = u^T W v estimates its own weight's top singular value: not 0, NaN or stale."""
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            norm = module.parametrizations.weight[0]
            matrix = norm._reshape_weight_to_matrix(module.parametrizations.weight.original.detach()).float()
            top = torch.linalg.matrix_norm(matrix, ord=2)
            estimate = torch.dot(norm._u.float(), matrix @ norm._v.float())
            assert 0.5 * top <= estimate <= 1.02 * top, f"{name}: sigma estimate {estimate} for top singular value {top}"


# Ways transformers hands out a model whose weights it initialised (issue 12: D was NaN on all but the first), besides
# the missing and mismatched keys tested below. Each returns a model for `config`; `tmp_path` holds any checkpoint.
def _built(tester, config, tmp_path):
    return tester.model_class(config)


def _from_empty_state_dict(tester, config, tmp_path):
    return tester.model_class.from_pretrained(None, config=config, state_dict={})


def _meta_device_then_init_weights(tester, config, tmp_path):
    with torch.device("meta"):
        model = tester.model_class(config)
    model.to_empty(device="cpu")
    model.init_weights()
    return model


def _bfloat16_missing_level_three(tester, config, tmp_path):
    save_without(tester.model_class(config), tmp_path, lambda key: key.startswith("level3."))
    return tester.model_class.from_pretrained(tmp_path, dtype=torch.bfloat16)


INIT_PATHS = {
    "constructor": _built,
    "from_pretrained_empty_state_dict": _from_empty_state_dict,
    "meta_device_init_weights": _meta_device_then_init_weights,
    "bfloat16_missing_keys": _bfloat16_missing_level_three,
}


class ModelConformanceChecks:
    tester: StageGANGeneratorModelTester

    def saved_model(self, folder):
        config, inputs = self.tester.prepare_config_and_inputs()
        model = self.tester.model_class(config).eval()
        model.save_pretrained(folder)
        with torch.no_grad():
            expected = [self.tester.results(out) for out in self.tester.run(model, inputs)]
        return model, inputs, expected

    def assert_reproduces(self, model, inputs, expected, rtol=1e-5, atol=1e-6):
        """`model`'s outputs are `expected` (float32 rounding by default: see the round-trip test above)."""
        with torch.no_grad():
            actual = [self.tester.results(out) for out in self.tester.run(model.eval(), inputs)]
        for got, want in zip(actual, expected):
            for a, b in zip(got, want):
                torch.testing.assert_close(a.float(), b, rtol=rtol, atol=atol)

    def assert_same_weights(self, model, source):
        state, source_state = model.state_dict(), source.state_dict()
        assert state.keys() == source_state.keys()
        assert all(torch.equal(state[key], source_state[key]) for key in state)

    def test_model(self):
        self.tester.create_and_check_model(*self.tester.prepare_config_and_inputs())

    def test_output_hidden_states_follow_the_argument_then_the_config(self):
        config, inputs = self.tester.prepare_config_and_inputs()
        model = self.tester.model_class(config).eval()
        expected_shapes = self.tester.expected_hidden_shapes(config)

        def hidden_shapes(outputs):
            return [None if out.hidden_states is None else [tuple(h.shape) for h in out.hidden_states] for out in outputs]

        with torch.no_grad():
            default = self.tester.run(model, inputs)
            asked = self.tester.run(model, inputs, output_hidden_states=True)
            model.config.output_hidden_states = True
            from_config = self.tester.run(model, inputs)
            overridden = self.tester.run(model, inputs, output_hidden_states=False)
            as_tuples = self.tester.run(model, inputs, return_dict=False)
        assert hidden_shapes(default) == hidden_shapes(overridden) == [None] * len(default)
        assert hidden_shapes(asked) == hidden_shapes(from_config) == expected_shapes
        for plain, with_hidden, as_tuple in zip(default, asked, as_tuples):
            # asking for hidden states changes nothing else; a tuple holds the non-None fields in order
            assert all(torch.equal(a, b) for a, b in zip(self.tester.results(plain), self.tester.results(with_hidden)))
            assert len(as_tuple) == len(plain.to_tuple()) + 1  # the same fields, and the hidden states last
            assert all(torch.equal(a, b) for a, b in zip(as_tuple[-1], with_hidden.hidden_states))

    def test_hidden_states_are_the_documented_features(self):
        config, inputs = self.tester.prepare_config_and_inputs()
        self.tester.create_and_check_hidden_states_are_documented_features(self.tester.model_class(config).eval(), inputs)

    def test_hidden_states_carry_gradients(self):
        config, inputs = self.tester.prepare_config_and_inputs()
        model = self.tester.model_class(config).train()
        for out in self.tester.run(model, inputs, output_hidden_states=True):
            first = out.hidden_states[0]
            first.retain_grad()
            self.tester.results(out)[0].sum().backward()
            assert first.grad is not None and first.grad.abs().sum() > 0

    def test_batching_equivalence(self):
        config, inputs = self.tester.prepare_config_and_inputs()
        model = self.tester.model_class(config).eval()
        with torch.no_grad():
            batched = [self.tester.results(out) for out in self.tester.run(model, inputs, output_hidden_states=True)]
            rows = [
                [self.tester.results(out) for out in self.tester.run(model, select(inputs, index))]
                for index in range(self.tester.batch_size)
            ]
        for index, row in enumerate(rows):
            for got, want in zip(row, batched):
                for a, b in zip(got, want):
                    torch.testing.assert_close(a, b[index : index + 1], rtol=1e-4, atol=1e-5)

    def assert_initialised(self, model, inputs, context=""):
        """Nothing left on the meta device, spectral norms that fit their weights, finite outputs in both modes."""
        assert not any(tensor.is_meta for tensor in [*model.parameters(), *model.buffers()])
        assert_power_iterations_match_weights(model)
        inputs = cast(inputs, model.dtype)
        for mode in ("eval", "train"):  # train mode also runs a power iteration per forward
            with torch.no_grad():
                outputs = self.tester.run(model.train(mode == "train"), inputs)
            for out in outputs:
                assert all(torch.isfinite(tensor).all() for tensor in self.tester.results(out)), f"{context} {mode}"

    @pytest.mark.parametrize("path", INIT_PATHS)
    def test_every_initialisation_gives_finite_outputs(self, path, tmp_path):
        config, inputs = self.tester.prepare_config_and_inputs()
        self.assert_initialised(INIT_PATHS[path](self.tester, config, tmp_path), inputs, path)

    def test_missing_keys_are_initialised_and_loaded_keys_kept(self, tmp_path):
        """A checkpoint without level 3, as when a user adds a level or resumes from a partial save."""
        config, inputs = self.tester.prepare_config_and_inputs()
        source = self.tester.model_class(config)
        dropped = save_without(source, tmp_path, lambda key: key.startswith("level3."))
        model, info = self.tester.model_class.from_pretrained(tmp_path, output_loading_info=True)
        assert set(info["missing_keys"]) == dropped and dropped
        saved, loaded = source.state_dict(), model.state_dict()
        assert all(torch.equal(loaded[key], saved[key]) for key in saved if key not in dropped)
        assert all(not torch.equal(loaded[key], saved[key]) for key in dropped if key.endswith("weight.original"))
        self.assert_initialised(model, inputs)

    def test_mismatched_sizes_need_ignore_mismatched_sizes(self, tmp_path):
        """A checkpoint of other widths: refused, or re-initialised where the shapes differ when asked."""
        config, inputs = self.tester.prepare_config_and_inputs()
        self.tester.model_class(self.tester.get_config(generator_channels=16, discriminator_channels=16)).save_pretrained(
            tmp_path
        )
        with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
            self.tester.model_class.from_pretrained(tmp_path, config=config)
        model, info = self.tester.model_class.from_pretrained(
            tmp_path, config=config, ignore_mismatched_sizes=True, output_loading_info=True
        )
        assert info["mismatched_keys"]
        self.assert_initialised(model, inputs)

    def test_sharded_checkpoint_loads_identically(self, tmp_path):
        source, inputs, expected = self.saved_model(tmp_path / "single")
        source.save_pretrained(tmp_path / "sharded", max_shard_size="10KB")
        shards = sorted((tmp_path / "sharded").glob("model-*-of-*.safetensors"))
        assert len(shards) > 1 and (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
        model = self.tester.model_class.from_pretrained(tmp_path / "sharded")
        self.assert_same_weights(model, source)
        self.assert_reproduces(model, inputs, expected)

    def test_device_map_loads_identically(self, tmp_path):
        source, inputs, expected = self.saved_model(tmp_path)
        for device_map in ("auto", {"": "cpu"}):  # "auto" goes through accelerate's placement
            model = self.tester.model_class.from_pretrained(tmp_path, device_map=device_map)
            assert {tensor.device.type for tensor in [*model.parameters(), *model.buffers()]} == {"cpu"}
            self.assert_same_weights(model, source)
            self.assert_reproduces(model, inputs, expected)

    def test_bfloat16_loads_close_to_float32(self, tmp_path):
        _, inputs, expected = self.saved_model(tmp_path)
        model = self.tester.model_class.from_pretrained(tmp_path, dtype=torch.bfloat16)
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
        self.assert_reproduces(model, cast(inputs, torch.bfloat16), expected, rtol=0.05, atol=0.05)


class TestStageGANGenerator(ModelConformanceChecks):
    tester = StageGANGeneratorModelTester()


class TestStageGANGeneratorImageSkip(ModelConformanceChecks):
    tester = StageGANGeneratorModelTester(image_skip=True)


class TestStageGANGeneratorBilinearUpsampling(ModelConformanceChecks):
    """The same contract with bilinear upsampling blocks (`generator_upsampling="bilinear"`), which have no phase-conv
    inference path."""

    tester = StageGANGeneratorModelTester(generator_upsampling="bilinear")


class TestStageGANDiscriminator(ModelConformanceChecks):
    tester = StageGANDiscriminatorModelTester()


class TestStageGANDiscriminatorUnconditional(ModelConformanceChecks):
    """The same contract with D2 and D3 also judging the image alone (`unconditional_discriminator_weight`)."""

    tester = StageGANDiscriminatorModelTester(unconditional_discriminator_weight=1.0)


def test_unconditional_logits_read_the_image_alone():
    config, inputs = StageGANDiscriminatorModelTester(unconditional_discriminator_weight=1.0).prepare_config_and_inputs()
    model = StageGANDiscriminator(config).eval()
    other_text = {2: {"sentence_embeds": torch.randn_like(inputs[2]["sentence_embeds"])},
                  3: {"word_embeds": torch.randn_like(inputs[3]["word_embeds"])}}
    with torch.no_grad():
        assert model(**inputs[1]).unconditional_logits is None  # D1 has only its one, unconditional, logit
        for level in (2, 3):
            out, moved = model(**inputs[level]), model(**{**inputs[level], **other_text[level]})
            assert out.unconditional_logits.shape == out.logits.shape == (2,)
            torch.testing.assert_close(moved.unconditional_logits, out.unconditional_logits, rtol=0, atol=0)
            assert not torch.allclose(moved.logits, out.logits)  # the conditional logit does read the text
            images = inputs[level]["images"].flip(-1)
            assert not torch.allclose(model(**{**inputs[level], "images": images}).unconditional_logits, out.unconditional_logits)
    plain = StageGANDiscriminator(StageGANDiscriminatorModelTester().get_config())
    assert not any("unconditional" in name for name, _ in plain.named_parameters())  # weight 0: no head at all
    assert plain(**inputs[2]).unconditional_logits is None and len(plain(**inputs[2], return_dict=False)) == 1


class TestStageGANDiscriminatorPerLevel(ModelConformanceChecks):
    """The same contract with D1 wider than D2 and D3 and without spectral norm (per-level config lists)."""

    tester = StageGANDiscriminatorModelTester(discriminator_channels=[16, 8, 8], discriminator_spectral_norm=[False, True, True])

    def test_each_level_has_its_own_width_and_spectral_norm(self):
        config, _ = self.tester.prepare_config_and_inputs()
        model = StageGANDiscriminator(config)
        first_convs = [level.encoder[0] for level in model.levels]
        assert [conv.out_channels for conv in first_convs] == [16, 8, 8]
        assert [hasattr(conv, "parametrizations") or hasattr(conv, "weight_orig") for conv in first_convs] == [False, True, True]

    def test_power_iteration_vectors_missing_from_checkpoint(self, tmp_path):
        """A checkpoint with the weights but not spectral norm's `_u` / `_v`: the weights load untouched and each sigma
        is estimated again from its loaded weight (to the power method's accuracy: 15 iterations, as torch's)."""
        config, inputs = self.tester.prepare_config_and_inputs()
        source = StageGANDiscriminator(config)
        dropped = save_without(source, tmp_path, lambda key: key.endswith(("._u", "._v")))
        model, info = StageGANDiscriminator.from_pretrained(tmp_path, output_loading_info=True)
        assert set(info["missing_keys"]) == dropped and dropped
        saved, loaded = source.state_dict(), model.state_dict()
        assert all(torch.equal(loaded[key], saved[key]) for key in saved if key not in dropped)
        self.assert_initialised(model, inputs)


# ---------------------------------------------------------------------------------------------------------------------
# Discriminator levels on the frozen CLIP image tower (discriminator_backbone="clip")

TINY_VISION = dict(
    hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=8
)


class StageGANClipBackboneDiscriminatorModelTester(StageGANDiscriminatorModelTester):
    """D1 convolutional, D2 and D3 on a tiny CLIP image tower (8x8 patch grid: one strided convolution to 4x4)."""

    def expected_hidden_shapes(self, config):
        shapes = super().expected_hidden_shapes(config)
        for level in (2, 3):
            if config.level_discriminator_backbone(level) == "clip":
                width = 2 * config.level_discriminator_channels(level)
                # the 1x1 convolution on the 8x8 patch grid, one strided convolution to 4x4, the joint features
                shapes[level - 1] = [(self.batch_size, width, 8, 8)] + [(self.batch_size, 2 * width, 4, 4)] * 2
        return shapes


def tiny_vision_model(seed=0):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    text = dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=TINY_VISION, projection_dim=TINY_TEXT_DIM)).eval()


CLIP_BACKBONE = dict(
    discriminator_backbone=["conv", "clip", "clip"],
    discriminator_vision_config=TINY_VISION,
    discriminator_spectral_norm=[True, False, True],
)


class TestStageGANDiscriminatorClipBackbone(ModelConformanceChecks):
    """The same contract with D2 and D3 reading a frozen CLIP image tower (D3 spectral-normed, D2 not)."""

    tester = StageGANClipBackboneDiscriminatorModelTester(**CLIP_BACKBONE)

    def test_levels_read_one_frozen_tower_that_no_level_optimises(self):
        config, _ = self.tester.prepare_config_and_inputs()
        model = StageGANDiscriminator(config)
        assert isinstance(model.level1, UnconditionalDiscriminator)
        assert [type(level).__name__ for level in model.levels[1:]] == ["VisionBackboneDiscriminator"] * 2
        assert model.level2._backbone is model.vision_backbone is model.level3._backbone
        tower = {id(p) for p in model.vision_backbone.parameters()}
        assert tower and not any(id(p) in tower for level in model.levels for p in level.parameters())
        assert not any(p.requires_grad for p in model.vision_backbone.parameters())
        assert not model.train().vision_backbone.training  # frozen as CLIP_FT: always in eval mode
        state = model.state_dict()
        assert any(key.startswith("vision_backbone.") for key in state)  # saved with D: a saved D is whole
        assert not any(key.startswith(("level2.vision", "level3.vision", "level2._backbone")) for key in state)

    def test_load_vision_backbone_copies_clip_ft_and_checks_its_shape(self):
        config, inputs = self.tester.prepare_config_and_inputs()
        model = StageGANDiscriminator(config).eval()
        clip_model = tiny_vision_model(seed=3)
        before = model(**inputs[3]).logits
        model.load_vision_backbone(clip_model)
        source, copied = clip_model.vision_model.state_dict(), model.vision_backbone.state_dict()
        assert source.keys() == copied.keys() and all(torch.equal(source[k], copied[k]) for k in source)
        assert not torch.equal(model(**inputs[3]).logits, before)  # D3 now reads the copied tower
        other = tiny_vision_model()
        other.vision_model = type(other.vision_model)(
            type(other.config.vision_config)(**{**TINY_VISION, "hidden_size": 32, "intermediate_size": 64})
        )
        with pytest.raises(ValueError, match="does not match `discriminator_vision_config`"):
            model.load_vision_backbone(other)
        with pytest.raises(ValueError, match="has no CLIP image tower"):
            StageGANDiscriminator(tiny_config()).load_vision_backbone(clip_model)

    def test_a_clip_level_needs_the_tower_config(self):
        with pytest.raises(ValueError, match="reads a CLIP image tower at D\\[3\\].*`discriminator_vision_config` is None"):
            StageGANDiscriminator(tiny_config(discriminator_backbone=["conv", "conv", "clip"]))

    def test_gradients_reach_the_image_through_the_tower_only_when_it_asks_for_them(self):
        config, inputs = self.tester.prepare_config_and_inputs()
        model = StageGANDiscriminator(config)
        images = inputs[3]["images"].clone().requires_grad_(True)
        model(**{**inputs[3], "images": images}).logits.sum().backward()
        assert images.grad is not None and images.grad.abs().sum() > 0  # the generator's update
        assert all(p.grad is None for p in model.vision_backbone.parameters())
        features = model.level3.backbone_features(inputs[3]["images"])  # a detached image: D's own update
        assert features.grad_fn is None
        assert features.shape == (self.tester.batch_size, 3 * TINY_VISION["hidden_size"], 8, 8)

    def test_hidden_states_have_the_documented_shapes(self):
        config, inputs = self.tester.prepare_config_and_inputs()
        model = StageGANDiscriminator(config).eval()
        with torch.no_grad():
            outputs = self.tester.run(model, inputs, output_hidden_states=True)
        got = [[tuple(t.shape) for t in out.hidden_states] for out in outputs]
        assert got == self.tester.expected_hidden_shapes(config)


def test_backbone_hidden_states_are_all_or_four_evenly_spaced():
    from hf_stagegan.modeling_stagegan import backbone_hidden_state_indices

    assert backbone_hidden_state_indices(2) == [0, 1, 2]
    assert backbone_hidden_state_indices(3) == [0, 1, 2, 3]
    assert backbone_hidden_state_indices(12) == [0, 4, 8, 12]  # ViT-B: embeddings, layers 4, 8 and the last
