"""Each loss against the patent's formula written out by hand on fixed inputs."""

import math

import pytest
import torch

from hf_stagegan.losses import (
    clip_ft_loss,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    sentence_image_loss,
    word_region_loss,
    word_region_similarity,
)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_discriminator_loss_is_the_patent_formula():
    real, fake = [2.0, -1.0, 0.5], [-3.0, 0.25]
    # L_D = -1/2 E_real[log D(x_t)] - 1/2 E_fake[log(1 - D(x_k))]
    expected = -0.5 * sum(math.log(sigmoid(r)) for r in real) / 3 - 0.5 * sum(math.log(1 - sigmoid(f)) for f in fake) / 2
    actual = discriminator_loss(torch.tensor(real, dtype=torch.float64), torch.tensor(fake, dtype=torch.float64))
    assert actual.item() == pytest.approx(expected, rel=1e-12)


def test_generator_loss_is_the_patent_formula():
    fake = [-3.0, 0.25, 4.0]
    expected = -0.5 * sum(math.log(sigmoid(f)) for f in fake) / 3  # L_G = -1/2 E[log D(x_k)]
    assert generator_loss(torch.tensor(fake, dtype=torch.float64)).item() == pytest.approx(expected, rel=1e-12)


def test_adversarial_losses_stay_finite_at_extreme_logits():
    big = torch.tensor([1e4, -1e4, 88.0, -104.0, 3e38])
    for value in (discriminator_loss(big, big), generator_loss(big), generator_loss(-big)):
        assert torch.isfinite(value)
    # a perfectly confident, correct D costs nothing; a confidently wrong one costs |logit| / 2 per term
    assert discriminator_loss(torch.tensor([1e4]), torch.tensor([-1e4])).item() == 0.0
    assert discriminator_loss(torch.tensor([-1e4]), torch.tensor([1e4])).item() == pytest.approx(1e4)
    assert generator_loss(torch.tensor([-1e4])).item() == pytest.approx(0.5e4)
    # gradients at extreme logits are finite too (no log(sigmoid()) underflow)
    logits = torch.tensor([1e4, -1e4], requires_grad=True)
    generator_loss(logits).backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[1].item() == pytest.approx(-0.25)


def test_sentence_image_loss_is_symmetric_batch_cross_entropy():
    torch.manual_seed(0)
    images, sentences = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    gamma3 = 10.0
    cos = [[(images[i] @ sentences[j] / images[i].norm() / sentences[j].norm()).item() for j in range(3)] for i in range(3)]
    expected = 0.0
    for i in range(3):  # image i should pick sentence i, and sentence i image i
        expected -= math.log(math.exp(gamma3 * cos[i][i]) / sum(math.exp(gamma3 * cos[i][j]) for j in range(3))) / 3
        expected -= math.log(math.exp(gamma3 * cos[i][i]) / sum(math.exp(gamma3 * cos[j][i]) for j in range(3))) / 3
    assert sentence_image_loss(images, sentences, gamma3).item() == pytest.approx(expected, rel=1e-10)


def test_sentence_image_loss_prefers_matching_pairs():
    embeds = torch.eye(4)
    matched = sentence_image_loss(embeds, embeds)
    shuffled = sentence_image_loss(embeds, embeds[[1, 0, 3, 2]])
    assert matched < 0.01 < 10 < shuffled


def _damsm_score_by_hand(regions, words, mask, gamma1, gamma2):
    """R(Q, D) for one (image, text) pair, written out word by word."""
    terms = []
    for index in range(words.shape[0]):
        if not mask[index]:
            continue
        w = words[index] / words[index].norm()
        sims = [(w @ (r / r.norm())).item() for r in regions]
        weights = [math.exp(gamma1 * s) for s in sims]
        context = sum(weight * r / r.norm() for weight, r in zip(weights, regions)) / sum(weights)
        relevance = (context @ w / context.norm()).item()
        terms.append(math.exp(gamma2 * relevance))
    return math.log(sum(terms)) / gamma2


def test_word_region_loss_is_damsm_by_hand():
    torch.manual_seed(1)
    regions = torch.randn(2, 5, 3, dtype=torch.float64)  # 2 images, 5 regions
    words = torch.randn(2, 4, 3, dtype=torch.float64)  # 2 texts, 4 word slots
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    g1, g2, g3 = 4.0, 5.0, 10.0
    scores = [[_damsm_score_by_hand(regions[i], words[t], mask[t], g1, g2) for t in range(2)] for i in range(2)]
    torch.testing.assert_close(
        word_region_similarity(regions, words, mask, g1, g2), torch.tensor(scores, dtype=torch.float64)
    )
    expected = 0.0
    for i in range(2):
        expected -= math.log(math.exp(g3 * scores[i][i]) / sum(math.exp(g3 * scores[i][t]) for t in range(2))) / 2
        expected -= math.log(math.exp(g3 * scores[i][i]) / sum(math.exp(g3 * scores[t][i]) for t in range(2))) / 2
    assert word_region_loss(regions, words, mask, g1, g2, g3).item() == pytest.approx(expected, rel=1e-10)


def test_word_region_loss_ignores_padding_and_survives_empty_text():
    torch.manual_seed(2)
    regions, words = torch.randn(2, 5, 3), torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    changed = words.clone()
    changed[0, 2:] = torch.randn(2, 3) * 50
    torch.testing.assert_close(word_region_loss(regions, words, mask), word_region_loss(regions, changed, mask))
    empty = torch.zeros_like(mask)
    assert word_region_loss(regions, words, empty).item() == 0.0


def test_a_text_with_no_words_scores_zero_and_is_left_out_of_the_word_region_loss():
    # The bug this guards: an all-masked text used to score about -1e4 (the mask fill), times gamma3 as a logit, so the
    # image paired with an empty caption cost about 2e4 (loss_g3 jumped from 18 to 25,015 at one empty caption).
    torch.manual_seed(3)
    regions = torch.randn(4, 6, 8, dtype=torch.float64, requires_grad=True)
    words = torch.randn(4, 5, 8, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    scores = word_region_similarity(regions, words, mask)
    assert torch.equal(scores[:, 1], torch.zeros(4, dtype=torch.float64))  # neutral, for every image
    assert scores.abs().max() <= 1 + math.log(5) / 5  # R(Q, D) of real words lies in [-1, 1 + log(L) / gamma2]

    loss = word_region_loss(regions, words, mask)
    keep = [0, 2, 3]  # the pair with the empty text is left out, as a pair and as a negative
    expected = word_region_loss(regions[keep], words[keep], mask[keep])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert loss.item() < 2 * math.log(3) + 2 * 10.0 * (2 + math.log(5) / 5)  # bounded by the score range
    loss.backward()
    assert torch.isfinite(regions.grad).all() and torch.isfinite(words.grad).all()
    assert words.grad[1].abs().max() == 0  # nothing is learnt from a text with no words


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_word_region_loss_with_an_empty_text_stays_finite_in_half_precision(dtype):
    torch.manual_seed(4)
    regions = torch.randn(3, 4, 8).to(dtype).requires_grad_()
    words = torch.randn(3, 5, 8).to(dtype).requires_grad_()
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    loss = word_region_loss(regions, words, mask)
    loss.float().backward()
    assert torch.isfinite(loss) and loss.item() < 50
    assert torch.isfinite(regions.grad).all() and torch.isfinite(words.grad).all()


def test_clip_ft_loss_weights_sentence_four_to_one():
    assert clip_ft_loss(torch.tensor(2.0), torch.tensor(3.0)).item() == 4 * 2.0 + 1 * 3.0
    assert clip_ft_loss(torch.tensor(2.0), torch.tensor(3.0), sentence_weight=1, word_weight=0).item() == 2.0


def test_gradient_penalty_is_the_gradient_norm_of_real_pairs():
    """For a linear D(x, c) = w.x + v.c the gradient is (w, v) for every pair: the penalty is ||(w, v)||^power."""
    w, v = torch.randn(3 * 4 * 4, requires_grad=True), torch.randn(5)
    images = torch.randn(2, 3, 4, 4, requires_grad=True)
    condition = torch.randn(2, 5, requires_grad=True)
    logits = images.flatten(1) @ w + condition @ v
    torch.testing.assert_close(gradient_penalty(logits, images), w.pow(2).sum())  # R1's squared norm
    both = gradient_penalty(logits, images, condition, power=6)
    torch.testing.assert_close(both, (w.pow(2).sum() + v.pow(2).sum()) ** 3)
    both.backward()  # create_graph: the penalty trains D's weights
    torch.testing.assert_close(w.grad, 3 * (w.pow(2).sum() + v.pow(2).sum()) ** 2 * 2 * w.detach())


def test_losses_stay_fp32_under_bf16_autocast():
    # mixed-precision training runs the model under autocast; the losses must not drop to bf16 (8 significant bits)
    generator = torch.Generator().manual_seed(0)
    images, sentences = torch.randn(8, 64, generator=generator), torch.randn(8, 64, generator=generator)
    regions, words = torch.randn(8, 49, 64, generator=generator), torch.randn(8, 12, 64, generator=generator)
    mask = torch.rand(8, 12, generator=generator) > 0.3
    real, fake = torch.randn(8, generator=generator) * 3, torch.randn(8, generator=generator) * 3
    losses = {
        "sentence": lambda: sentence_image_loss(images, sentences),
        "word": lambda: word_region_loss(regions, words, mask),
        "discriminator": lambda: discriminator_loss(real.bfloat16(), fake.bfloat16()),
        "generator": lambda: generator_loss(fake.bfloat16()),
    }
    for name, loss in losses.items():
        expected = loss()
        with torch.autocast("cpu", torch.bfloat16):
            actual = loss()
        assert actual.dtype == torch.float32, name
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6, msg=name)
    # bf16 logits are upcast before softplus and the mean: the result is the fp32 loss of the rounded logits
    torch.testing.assert_close(generator_loss(fake.bfloat16()), generator_loss(fake.bfloat16().float()), rtol=0, atol=0)
