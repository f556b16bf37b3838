"""Differentiable augmentation of the discriminators' inputs (DiffAugment): each transformation, the config field, and
that a training step shows D augmented images, real and generated, while CLIP_FT sees the generated ones unchanged."""

import pytest
import torch
import torch.nn.functional as F

from hf_stagegan import StageGANConfig
from hf_stagegan.augmentation import augment_for_discriminator, color, cutout, translate
from hf_stagegan.training import training_step

from .conftest import tiny_config
from .test_training import build, toy_batch


def images(batch=8, side=16, seed=0):
    # strictly positive pixels, so that a zero in the output can only come from the augmentation
    return torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(seed)) + 0.5


def shifted(image, dy, dx):
    """`image` `(C, H, W)` moved down `dy` and right `dx` pixels, zero-filled."""
    pad = max(abs(dy), abs(dx))
    padded = F.pad(image, (pad, pad, pad, pad))
    height, width = image.shape[1:]
    return padded[:, pad - dy : pad - dy + height, pad - dx : pad - dx + width]


def test_translation_moves_each_image_by_its_own_whole_pixel_offset():
    torch.manual_seed(0)
    x = images()
    out = translate(x)
    assert out.shape == x.shape
    offsets = []
    for b in range(x.shape[0]):
        # 16 px: at most 2 px (1/8 of the side) each way
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(out[b], shifted(x[b], dy, dx))]
        assert len(found) == 1, b
        offsets.append(found[0])
    assert len(set(offsets)) > 1  # drawn per image, not once per batch


def test_cutout_zeroes_one_square_of_half_the_side_clipped_at_the_border():
    torch.manual_seed(0)
    x = images(batch=16)
    out = cutout(x)
    for b in range(x.shape[0]):
        zero = (out[b] == 0).all(dim=0)  # (H, W)
        assert ((out[b] == 0) == zero[None]).all()  # every channel of a pixel, or none
        rows, cols = zero.any(dim=1).nonzero().flatten(), zero.any(dim=0).nonzero().flatten()
        assert 0 < len(rows) <= 8 and 0 < len(cols) <= 8
        box = zero[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all() and zero.sum() == box.numel()  # one solid rectangle
        assert torch.equal(out[b][:, ~zero], x[b][:, ~zero])  # the rest untouched
    full = [(out[b] == 0).all(dim=0).sum().item() for b in range(x.shape[0])]
    assert 64 in full and min(full) < 64  # 8x8 inside the image, smaller where the square leaves it


def test_color_jitters_brightness_saturation_and_contrast_per_image():
    torch.manual_seed(0)
    grey = torch.zeros(4, 3, 8, 8)
    out = color(grey)
    # a grey image keeps equal channels (saturation has nothing to scale) and stays flat: only brightness moves it
    assert torch.allclose(out, out[:, :1].expand_as(out)) and torch.allclose(out, out[:, :, :1, :1].expand_as(out))
    assert out[:, 0, 0, 0].unique().numel() == 4 and out.abs().max() <= 0.5
    assert not torch.allclose(color(images(batch=4)), images(batch=4))


@pytest.mark.parametrize("policy", [["translation"], ["cutout"], ["color"], ["translation", "cutout", "color"]])
def test_the_generator_gradient_passes_through_the_augmentation(policy):
    torch.manual_seed(0)
    x = images(batch=4).requires_grad_(True)
    out = augment_for_discriminator(x, policy)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    if policy == ["cutout"]:  # d out / d x is the mask: 1 outside the square, 0 inside
        kept = out != 0
        torch.testing.assert_close(x.grad, weights * kept)


def test_empty_policy_is_the_identity_and_unknown_names_are_named():
    x = images(batch=2)
    assert augment_for_discriminator(x, []) is x
    with pytest.raises(ValueError, match=r"'zoom'.*\['translation', 'cutout', 'color'\]"):
        augment_for_discriminator(x, ["translation", "zoom"])


def test_config_field_is_checked_and_saved(tmp_path):
    config = tiny_config(discriminator_augmentation=("translation", "cutout"))
    assert config.discriminator_augmentation == ["translation", "cutout"]  # JSON has no tuples
    assert StageGANConfig().discriminator_augmentation == []  # off unless asked for
    with pytest.raises(ValueError, match=r"`discriminator_augmentation` names unknown transformations \['zoom'\]"):
        tiny_config(discriminator_augmentation=["zoom"])
    with pytest.raises(ValueError, match="`discriminator_augmentation` names a transformation twice"):
        tiny_config(discriminator_augmentation=["cutout", "cutout"])
    with pytest.raises(ValueError, match="`discriminator_augmentation` must be a list of transformation names, got 'cutout'"):
        tiny_config(discriminator_augmentation="cutout")
    config.save_pretrained(tmp_path)
    assert StageGANConfig.from_pretrained(tmp_path).discriminator_augmentation == ["translation", "cutout"]


@pytest.mark.parametrize("policy", [[], ["cutout"]])
def test_training_step_shows_the_discriminators_augmented_images(tokenizer, clip_model, policy):
    """With cutout, every image any D sees (its own update: real, fake, mismatched; G's update: fake) has a square of
    exact zeros; toy images and generated ones (tanh of noisy features) have none. CLIP_FT's inputs have none."""
    generator, discriminator, optimizers = build(tiny_config(discriminator_augmentation=policy, mismatched_text_weight=1.0))
    seen, clip_seen = {1: [], 2: [], 3: []}, []
    hooks = [
        level.register_forward_pre_hook(lambda module, inputs, level=k: seen[level].append(inputs[0].detach().clone()))
        for k, level in enumerate(discriminator.levels, start=1)
    ]
    hooks.append(clip_model.vision_model.register_forward_pre_hook(
        lambda module, args, kwargs: clip_seen.append((args or (kwargs["pixel_values"],))[0].detach().clone()),
        with_kwargs=True,
    ))
    torch.manual_seed(0)
    training_step(toy_batch(tokenizer, 4), generator=generator, discriminator_levels=discriminator.levels,
                  clip_model=clip_model, optimizers=optimizers)
    for hook in hooks:
        hook.remove()
    for level, calls in seen.items():
        assert [len(call) for call in calls] == [8 if level == 1 else 12, 4]  # D's update, then G's
        for call in calls:
            has_square = (call == 0).all(dim=1).flatten(1).any(dim=1)  # (N,): a pixel zero in every channel
            assert has_square.all() if policy else not has_square.any(), (level, has_square)
    assert len(clip_seen) == 2 and not any((call == 0).all(dim=1).any() for call in clip_seen)



def test_train_script_flag_reaches_the_config(capsys):
    from .test_ablations import train

    args = train.parse_args(["--discriminator_augmentation", "translation", "cutout"])
    assert train.build_config(args, text_embed_dim=16).discriminator_augmentation == ["translation", "cutout"]
    assert train.build_config(train.parse_args([]), text_embed_dim=16).discriminator_augmentation == []
    with pytest.raises(SystemExit):
        train.parse_args(["--discriminator_augmentation", "cutout", "cutout"])
    assert "--discriminator_augmentation names a transformation twice: ['cutout', 'cutout']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.parse_args(["--discriminator_augmentation", "zoom"])
    assert "invalid choice: 'zoom'" in capsys.readouterr().err
