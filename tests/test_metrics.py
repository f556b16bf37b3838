"""Metrics on inputs with known answers: Fréchet distances, CLIP score, R-precision, CMD, the matcher's part accuracy,
and the Inception weights' missing-file error."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPImageProcessor, CLIPProcessor

from hf_stagegan.evaluation.metrics import (
    INCEPTION_WEIGHTS_FILE,
    check_inception_weights,
    clip_image_embeddings,
    clip_score,
    clip_text_embeddings,
    cross_modal_distance,
    frechet_distance,
    inception_fid,
    part_swap_accuracy,
    r_precision,
)


def gaussian(n, dim=8, shift=0.0, scale=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=generator, dtype=torch.float64) * scale + shift


def test_frechet_distance_known_answers():
    a = gaussian(2000, seed=0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)  # identical sets
    same = frechet_distance(a, gaussian(2000, seed=1))  # same distribution: a small sampling bias only
    assert same < 0.1
    # N(0, I) vs N(mu, I): ||mu||^2 = 8 * 0.5^2 = 2; vs N(0, 4I): Tr(I + 4I - 2 * 2I) = 8
    assert frechet_distance(a, gaussian(2000, shift=0.5, seed=1)) == pytest.approx(2.0, abs=0.3)
    assert frechet_distance(a, gaussian(2000, scale=2.0, seed=1)) == pytest.approx(8.0, rel=0.1)
    shifted = [frechet_distance(a, gaussian(2000, shift=s, seed=1)) for s in (0.25, 0.5, 1.0)]
    assert same < shifted[0] < shifted[1] < shifted[2]


def test_frechet_distance_bad_input():
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(gaussian(10, dim=4), gaussian(10, dim=5))
    with pytest.raises(ValueError, match=">= 2 samples"):
        frechet_distance(gaussian(1), gaussian(10))


def unit(x):
    return F.normalize(x.float(), dim=-1)


def test_r_precision_perfect_and_random_matchers():
    n, captions = 1000, [f"caption {i}" for i in range(1000)]
    texts = unit(gaussian(n, dim=64, seed=2))
    perfect = r_precision(texts.clone(), texts, captions)
    assert perfect == {"mean": 1.0, "std": 0.0, "num_candidates": 100, "num_folds": 10, "num_images": n}
    random_images = unit(gaussian(n, dim=64, seed=3))
    rates = [r_precision(random_images, texts, captions, seed=seed)["mean"] for seed in range(5)]
    assert 0.002 < np.mean(rates) < 0.025  # chance: 1 / 100
    # fewer candidates, higher chance
    assert 0.15 < r_precision(random_images, texts, captions, num_candidates=5)["mean"] < 0.25


def test_r_precision_never_mismatches_against_the_same_caption():
    """A mismatched candidate identical to the true caption would make the task impossible: such strings are left
    out. With 2 distinct captions repeated, the only valid mismatch is the other caption."""
    captions = ["a red bird", "a blue bird"] * 10
    texts = unit(torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 10))
    images = unit(torch.tensor([[1.0, 0.1], [0.1, 1.0]] * 10))
    assert r_precision(images, texts, captions, num_candidates=2, num_folds=2)["mean"] == 1.0
    with pytest.raises(ValueError, match="has only 10 different captions"):
        r_precision(images, texts, captions, num_candidates=12, num_folds=2)
    with pytest.raises(ValueError, match="one embedding per caption"):
        r_precision(images[:5], texts, captions)


def test_cmd_of_matched_distributions_is_about_zero():
    towards = torch.zeros(16, dtype=torch.float64)
    towards[0] = 2.0  # the sentences cluster around one direction of the sphere
    sentences = unit(gaussian(3000, dim=16, seed=4) + towards)
    real = unit(sentences + 0.3 * unit(gaussian(3000, dim=16, seed=5)))  # images near their sentences
    fake_matched = unit(sentences + 0.3 * unit(gaussian(3000, dim=16, seed=6)))  # same distribution, new draw
    fake_off = unit(gaussian(3000, dim=16, seed=7) - towards)  # away from the text
    matched = cross_modal_distance(real, fake_matched, sentences)
    off = cross_modal_distance(real, fake_off, sentences)
    assert cross_modal_distance(real, real, sentences)["cmd"] == pytest.approx(0.0, abs=1e-9)
    assert abs(matched["cmd"]) < 0.05 * off["cmd"]
    assert off["cmd"] > 0.1
    assert matched["cmd"] == pytest.approx(
        matched["fd_real_fake"] + matched["fd_fake_sentences"] - matched["fd_real_sentences"]
    )


class _TensorFeatures(torch.nn.Module):
    """transformers 5's `get_*_features` return ModelOutputs; torchmetrics 1.9's CLIPScore expects tensors."""

    def __init__(self, clip_model):
        super().__init__()
        self.clip_model = clip_model
        self.config = clip_model.config

    def get_image_features(self, pixel_values):
        return self.clip_model.get_image_features(pixel_values=pixel_values).pooler_output

    def get_text_features(self, input_ids, attention_mask):
        return self.clip_model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


def test_clip_score_matches_torchmetrics(clip_model, tokenizer):
    """Our CLIP score is torchmetrics' CLIPScore (same formula), computed on the embeddings the other metrics use."""
    from torchmetrics.multimodal.clip_score import CLIPScore

    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)  # at the CLIP's size: no resizing differences
    captions = ["a red bird", "a blue bird", "a small blue bird", "a red bird", "a blue bird", "a red bird"]
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    reference = CLIPScore(model_name_or_path=lambda: (_TensorFeatures(clip_model), processor))
    reference.update(images, captions)
    image_embeds = clip_image_embeddings(clip_model, images.permute(0, 2, 3, 1).numpy())  # uint8 (N, H, W, 3)
    text_embeds = clip_text_embeddings(clip_model, tokenizer, captions)
    ours = clip_score(image_embeds, text_embeds)
    assert ours == pytest.approx(float(reference.compute()), abs=1e-3)
    assert clip_score(text_embeds, text_embeds) == pytest.approx(100.0)
    assert clip_score(text_embeds, -text_embeds) == 0.0  # clipped at 0


def birds_with_full_captions(n, resolution=32):
    """`n` SynthBirds birds and a caption naming every part in a fixed order: body, wings, crown, beak."""
    from hf_stagegan.data.synthbirds import generate_bird

    images, captions = [], []
    for seed in range(n):
        image, a, _ = generate_bird(seed, resolution=resolution)
        article = "an" if a["body_color"][0] in "aeiou" else "a"
        crown_article = "an" if a["crown_color"][0] in "aeiou" else "a"
        images.append(image)
        captions.append(
            f"this bird has {article} {a['body_color']} body, {a['wing_color']} wings, {crown_article} "
            f"{a['crown_color']} crown and a {a['beak_length']} {a['beak_color']} beak"
        )
    return images, captions


def test_part_swap_accuracy_of_an_untrained_matcher_is_near_chance():
    """An untrained CLIP cannot tell the parts apart: its hit rate is about chance, 1 / (swaps + 1)."""
    from hf_stagegan.encoders import build_clip_from_scratch, train_clip_tokenizer

    images, captions = birds_with_full_captions(120)
    tokenizer = train_clip_tokenizer(captions, vocab_size=400)
    torch.manual_seed(0)
    clip_model = build_clip_from_scratch(
        tokenizer, projection_dim=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
        patch_size=8,
    ).eval()
    result = part_swap_accuracy(clip_model, tokenizer, images, captions, num_swaps=5)
    assert result["count"] == dict.fromkeys(("body_color", "wing_color", "crown_color", "beak_color"), 120)
    assert result["chance"] == pytest.approx(1 / 6)
    for score in ("sentence", "word_region"):
        assert 0.05 < np.mean(list(result[score].values())) < 0.35


def test_part_swap_accuracy_of_a_matcher_blind_to_a_part_is_zero(clip_model, tokenizer):
    """The shared tiny tokenizer keeps 16 tokens: the beak, last in these captions, is cut off, so every swapped beak
    caption scores exactly like the true one. A hit must be strictly better, so a blind matcher scores 0 (not 1)."""
    images, captions = birds_with_full_captions(8)
    result = part_swap_accuracy(clip_model, tokenizer, images, captions, num_swaps=5)
    assert result["sentence"]["beak_color"] == 0.0 and result["word_region"]["beak_color"] == 0.0
    with pytest.raises(ValueError, match=r"`num_swaps` must be <= 5 \(the other values of 'beak_color'\)"):
        part_swap_accuracy(clip_model, tokenizer, images[:2], captions[:2], num_swaps=6)
    with pytest.raises(ValueError, match="Got 2 images but 1 `captions`"):
        part_swap_accuracy(clip_model, tokenizer, images[:2], captions[:1])


def test_missing_inception_weights_say_which_file_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError) as error:
        check_inception_weights()
    message = str(error.value)
    assert INCEPTION_WEIGHTS_FILE in message and str(tmp_path / "torch" / "hub" / "checkpoints") in message
    assert "--inception_weights" in message and "--fid_feature_extractor" in message
    with pytest.raises(FileNotFoundError, match="`inception_weights` '.*nope.pth' is not a file"):
        inception_fid(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), inception_weights=tmp_path / "nope.pth")
    present = tmp_path / "torch" / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE
    present.parent.mkdir(parents=True)
    present.write_bytes(b"")
    assert check_inception_weights() == present
