"""Mismatched captions (one colour word swapped): the caption transform, the batches, the losses, and what they teach."""

import numpy as np
import pytest
import torch

from hf_stagegan import StageGANDiscriminator, StageGANGenerator
from hf_stagegan.clip_finetuning import CLIPMatchingLoss, clip_finetuning_step
from hf_stagegan.data import build_dataloader, load_image_text_dataset
from hf_stagegan.data.negatives import ColorSwap
from hf_stagegan.encoders import encode_images, encode_text, tokenize_prompts
from hf_stagegan.losses import sentence_image_loss, word_region_loss, word_region_similarity
from hf_stagegan.training import (
    build_optimizers,
    generator_losses,
    level_conditions,
    mismatched_text,
    swapped_captions,
    training_step,
)

from .conftest import tiny_config
from .test_training import BLUE, RED, toy_batch


def test_color_swap_replaces_exactly_one_colour_word():
    swap = ColorSwap.from_captions(["a red bird with blue wings and a grey crown", "a green bird", "a gray bird"])
    assert swap.vocabulary == ("blue", "gray", "green", "grey", "red")
    caption = "a red bird with blue wings and a grey crown"
    negatives = swap(caption, 20, np.random.default_rng(0))
    assert len(negatives) == len(set(negatives)) == 9  # 3 colour words x 3 other colours (grey and gray are one)
    for negative in negatives:
        changed = [(a, b) for a, b in zip(caption.split(), negative.split()) if a != b]
        assert len(changed) == 1 and changed[0][1] in swap.vocabulary, negative
        assert {changed[0][0], changed[0][1]} != {"grey", "gray"}  # a synonym is not a mismatch
    assert swap("a small bird", 3, np.random.default_rng(0)) == []
    assert swap(caption, 3, np.random.default_rng(1)) == swap(caption, 3, np.random.default_rng(1))


def test_color_swap_needs_two_colours():
    with pytest.raises(ValueError, match=r"`vocabulary` needs at least 2 colour words to swap one for another, got \['red'\]"):
        ColorSwap.from_captions(["a red bird", "a small red bird"])


def test_batches_carry_reproducible_negatives_without_changing_the_rest(tokenizer):
    dataset = load_image_text_dataset(num_train=8, num_test=0, resolution=32)
    plain = next(iter(build_dataloader(dataset, tokenizer, resolution=32, batch_size=4, seed=3)))
    with_negatives = build_dataloader(dataset, tokenizer, resolution=32, batch_size=4, seed=3, num_negatives=2)
    batch = next(iter(with_negatives))
    again = next(iter(build_dataloader(dataset, tokenizer, resolution=32, batch_size=4, seed=3, num_negatives=2)))
    assert torch.equal(batch["pixel_values"], plain["pixel_values"])  # same images and captions as without negatives
    length = batch["input_ids"].shape[1]
    assert torch.equal(batch["input_ids"][:, : plain["input_ids"].shape[1]], plain["input_ids"][:, :length])
    assert batch["negative_input_ids"].shape == (4, 2, length)
    assert batch["negative_mask"].shape == (4, 2)
    assert torch.equal(batch["negative_input_ids"], again["negative_input_ids"])
    # the toy tokenizer keeps 16 tokens: a swap beyond them is no mismatch, and only those slots are masked out
    same = (batch["negative_input_ids"] == batch["input_ids"][:, None]).all(-1)
    assert torch.equal(batch["negative_mask"], ~same) and batch["negative_mask"].any()


def test_hard_negatives_extend_the_image_to_text_classes():
    torch.manual_seed(0)
    images, sentences, negatives = torch.randn(3, 8), torch.randn(3, 8), torch.randn(3, 2, 8)
    plain = sentence_image_loss(images, sentences)
    mask = torch.tensor([[True, False], [True, True], [False, False]])
    hard = sentence_image_loss(images, sentences, negative_sentence_embeds=negatives, negative_mask=mask)
    normalize = torch.nn.functional.normalize
    logits = 10 * normalize(images, dim=-1) @ normalize(sentences, dim=-1).t()
    extra = 10 * (normalize(images, dim=-1)[:, None] * normalize(negatives, dim=-1)).sum(-1)
    expected = 0.0
    for i in range(3):  # image i against the batch's captions and its own valid negatives
        row = torch.cat([logits[i], extra[i][mask[i]]])
        expected = expected + (torch.logsumexp(row, 0) - logits[i, i]) / 3
        expected = expected + (torch.logsumexp(logits[:, i], 0) - logits[i, i]) / 3
    torch.testing.assert_close(hard, expected)
    assert hard > plain
    none_valid = sentence_image_loss(images, sentences, negative_sentence_embeds=negatives, negative_mask=torch.zeros(3, 2, dtype=torch.bool))
    torch.testing.assert_close(none_valid, plain)


def test_word_region_score_of_own_texts_is_the_diagonal_of_all_pairs():
    torch.manual_seed(0)
    regions, words = torch.randn(3, 5, 8), torch.randn(3, 4, 8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 1, 1, 0]]).bool()
    all_pairs = word_region_similarity(regions, words, mask)  # (3, 3)
    own = word_region_similarity(regions, words[:, None].expand(-1, 2, -1, -1), mask[:, None].expand(-1, 2, -1))
    assert own.shape == (3, 2)
    torch.testing.assert_close(own[:, 0], all_pairs.diagonal())
    loss = word_region_loss(regions, words, mask, negative_word_embeds=words[:, None], negative_word_mask=mask[:, None])
    assert loss > word_region_loss(regions, words, mask)  # a negative as good as the truth makes the task harder


TOY_COLORS = {"red": RED, "blue": BLUE, "black": torch.tensor([-1.0, -1.0, -1.0]), "white": torch.tensor([1.0, 1.0, 1.0])}


def two_part_batch(tokenizer, batch_size=8, seed=0, side=32, crown=8):
    """
    Images whose top strip (the "crown": red or blue) and the rest (the "body": one of 4 colours) are captioned "a
    <body> body and a <crown> crown"; each caption's negative has the crown colour swapped. As on SynthBirds, the
    part that tells most in-batch pairs apart is the body.
    """
    names = list(TOY_COLORS)
    generator = torch.Generator().manual_seed(seed)
    bodies = torch.randint(0, 4, (batch_size,), generator=generator).tolist()
    crowns = torch.randint(0, 2, (batch_size,), generator=generator).tolist()
    images = torch.stack([
        torch.cat([TOY_COLORS[names[c]][:, None, None].expand(3, crown, side),
                   TOY_COLORS[names[b]][:, None, None].expand(3, side - crown, side)], dim=1)
        for c, b in zip(crowns, bodies)
    ])  # fmt: skip
    images = (0.8 * images + 0.1 * torch.randn(images.shape, generator=generator)).clamp(-1, 1)
    captions = [f"a {names[b]} body and a {names[c]} crown" for c, b in zip(crowns, bodies)]
    swapped = [f"a {names[b]} body and a {names[1 - c]} crown" for c, b in zip(crowns, bodies)]
    text = tokenize_prompts(tokenizer, captions + swapped)
    return {
        "pixel_values": images,
        "input_ids": text.input_ids[:batch_size],
        "attention_mask": text.attention_mask[:batch_size],
        "negative_input_ids": text.input_ids[batch_size:, None],
        "negative_attention_mask": text.attention_mask[batch_size:, None],
        "negative_mask": torch.ones(batch_size, 1, dtype=torch.bool),
    }


def crown_margin(clip_model, tokenizer):
    """Mean cosine margin of the true caption over the same caption with the crown colour swapped, on held-out pairs."""
    batch = two_part_batch(tokenizer, batch_size=64, seed=999)
    with torch.no_grad():
        image = encode_images(clip_model, batch["pixel_values"]).image_embeds
        text = encode_text(clip_model, batch["input_ids"], batch["attention_mask"]).sentence_embeds
        swapped = encode_text(clip_model, batch["negative_input_ids"], batch["negative_attention_mask"]).sentence_embeds
    return ((image * text).sum(-1) - (image * swapped[:, 0]).sum(-1)).mean().item()


@pytest.mark.slow
def test_hard_negatives_teach_the_matcher_the_part_in_batch_negatives_miss(tokenizer, clip_model):
    """Same seeds and steps, with and without one crown-swapped negative per caption: the negatives widen the margin."""
    margins = {False: [], True: []}
    for seed in range(3):
        for use_negatives in (False, True):
            torch.manual_seed(seed)
            model = type(clip_model)(clip_model.config).train()
            optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
            for step in range(30):
                batch = two_part_batch(tokenizer, seed=step)
                if not use_negatives:
                    batch = {k: v for k, v in batch.items() if not k.startswith("negative")}
                clip_finetuning_step(batch, CLIPMatchingLoss(model), optimizer)
            margins[use_negatives].append(crown_margin(model.eval(), tokenizer))
    # measured: 0.04 / 0.25 / 0.17 without, 0.19 / 0.30 / 0.21 with
    assert all(m > 0 for m in margins[True])
    assert sum(margins[True]) > 1.2 * sum(margins[False]), margins


def test_mismatched_text_uses_swapped_captions_where_valid_else_the_previous_example(tokenizer, clip_model):
    batch = two_part_batch(tokenizer, batch_size=4)
    batch["negative_mask"][1, 0] = False
    text = encode_text(clip_model, batch["input_ids"], batch["attention_mask"])
    swapped = encode_text(clip_model, batch["negative_input_ids"][:, 0], batch["negative_attention_mask"][:, 0])
    mismatched = mismatched_text(clip_model, batch, text)
    torch.testing.assert_close(mismatched.sentence_embeds[[0, 2, 3]], swapped.sentence_embeds[[0, 2, 3]])
    torch.testing.assert_close(mismatched.sentence_embeds[1], text.sentence_embeds[0])  # rolled: the previous caption
    del batch["negative_input_ids"]
    rolled = mismatched_text(clip_model, batch, text)
    torch.testing.assert_close(rolled.word_embeds, text.word_embeds.roll(1, dims=0))


@pytest.mark.slow
def test_matching_aware_discriminator_learns_to_reject_wrong_captions(tokenizer, clip_model):
    """With the mismatched-text term, D2 scores a real red image higher with "a red bird" than with "a blue bird"."""
    config = tiny_config(mismatched_text_weight=1.0)
    torch.manual_seed(0)
    generator, discriminator = StageGANGenerator(config), StageGANDiscriminator(config)
    optimizers = build_optimizers(generator, discriminator, generator_lr=2e-3, discriminator_lr=2e-3)

    def margin():
        batch = toy_batch(tokenizer, batch_size=8, seed=123)
        text = encode_text(clip_model, batch["input_ids"], batch["attention_mask"])
        real = torch.nn.functional.interpolate(batch["pixel_values"], size=32, mode="bilinear", antialias=True)
        true_logits = discriminator(real, level=2, sentence_embeds=level_conditions(text)[1]).logits
        wrong_logits = discriminator(real, level=2, sentence_embeds=text.sentence_embeds.roll(1, 0)).logits
        return (true_logits - wrong_logits).mean().item()

    with torch.no_grad():
        before = margin()
    for step in range(30):
        training_step(
            toy_batch(tokenizer, seed=step), generator=generator, discriminator_levels=discriminator.levels,
            clip_model=clip_model, optimizers=optimizers,
        )
    with torch.no_grad():
        after = margin()
    assert abs(before) < 0.5 and after > before + 1.0, (before, after)


def test_text_loss_hard_negatives_join_every_clip_ft_term(tokenizer, clip_model):
    batch = two_part_batch(tokenizer, batch_size=4)
    batch["negative_mask"][1, 0] = False  # example 1 has no swapped caption
    config, plain_config = tiny_config(text_loss_hard_negatives=True), tiny_config()
    torch.manual_seed(0)
    generator, discriminator = StageGANGenerator(config), StageGANDiscriminator(config)
    text = encode_text(clip_model, batch["input_ids"], batch["attention_mask"])
    images = generator(
        noise=torch.randn(4, config.z_dim), sentence_embeds=text.sentence_embeds, word_embeds=text.word_embeds,
        word_mask=text.word_mask,
    ).images
    negatives, mask = swapped_captions(clip_model, batch), batch["negative_mask"]
    assert negatives.sentence_embeds.shape[:2] == (4, 1)
    losses = generator_losses(images, text, discriminator.levels, clip_model, config, negatives, mask)
    features2, features3 = encode_images(clip_model, images[1]), encode_images(clip_model, images[2])
    gammas = (config.damsm_gamma1, config.damsm_gamma2, config.damsm_gamma3)
    expected = {
        "clip_ft_s": sentence_image_loss(features2.image_embeds, text.sentence_embeds, gammas[2], negatives.sentence_embeds, mask),
        "clip_ft_sentence": sentence_image_loss(
            features3.image_embeds, text.sentence_embeds, gammas[2], negatives.sentence_embeds, mask
        ),
        "clip_ft_word": word_region_loss(
            features3.region_embeds, text.word_embeds, text.word_mask, *gammas, negatives.word_embeds, negatives.word_mask,
            mask,
        ),
    }
    plain = generator_losses(images, text, discriminator.levels, clip_model, plain_config)
    unused = generator_losses(images, text, discriminator.levels, clip_model, config, negatives, torch.zeros_like(mask))
    for key, value in expected.items():
        torch.testing.assert_close(losses[key], value)
        assert losses[key] > plain[key]  # one more wrong class for every image that has a swapped caption
        torch.testing.assert_close(unused[key], plain[key])  # no valid slot: the patent's losses
    torch.testing.assert_close(
        losses["clip_ft"], config.level3_sentence_weight * expected["clip_ft_sentence"]
        + config.level3_word_weight * expected["clip_ft_word"]
    )
    with pytest.raises(ValueError, match=r"`config.text_loss_hard_negatives` is True but no `negatives` were given"):
        generator_losses(images, text, discriminator.levels, clip_model, config)


def test_training_step_with_text_loss_hard_negatives_needs_them_before_any_update(tokenizer, clip_model):
    config = tiny_config(text_loss_hard_negatives=True)
    torch.manual_seed(0)
    generator, discriminator = StageGANGenerator(config), StageGANDiscriminator(config)
    optimizers = build_optimizers(generator, discriminator)
    batch = two_part_batch(tokenizer, batch_size=4, side=config.stage_resolutions[-1])
    before = [p.detach().clone() for p in [*generator.parameters(), *discriminator.parameters()]]
    plain = {k: v for k, v in batch.items() if not k.startswith("negative")}
    with pytest.raises(ValueError, match=r"the batch has no colour-swapped captions \(`negative_input_ids`\)"):
        training_step(plain, generator=generator, discriminator_levels=discriminator.levels, clip_model=clip_model, optimizers=optimizers)
    after = [*generator.parameters(), *discriminator.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    logs = training_step(batch, generator=generator, discriminator_levels=discriminator.levels, clip_model=clip_model, optimizers=optimizers)
    assert all(np.isfinite(value) for value in logs.values())
    assert not all(torch.equal(a, b) for a, b in zip(before, after))
