import subprocess
import sys

import pytest
import torch
from transformers import CLIPTextModelWithProjection

from hf_stagegan.encoders import (
    encode_images,
    encode_text,
    prepare_images,
    text_encoder_from_clip,
    tokenize_prompts,
    train_clip_tokenizer,
)

from .conftest import TINY_TEXT_DIM


def test_text_features_shapes_mask_and_joint_space(tokenizer, clip_model):
    prompts = ["a red bird", "this bird has a red body and black wings"]
    batch = tokenize_prompts(tokenizer, prompts)
    text = encode_text(clip_model, batch.input_ids, batch.attention_mask)
    length = batch.input_ids.shape[1]
    assert text.sentence_embeds.shape == (2, TINY_TEXT_DIM)
    assert text.word_embeds.shape == (2, length, TINY_TEXT_DIM)
    # words are the real tokens only: no start token, no end token, no padding
    assert text.word_mask.sum(1).tolist() == [len(tokenizer.tokenize(prompt)) for prompt in prompts]
    assert text.word_mask.sum(1).tolist()[0] == 3
    assert not text.word_mask[:, 0].any()
    torch.testing.assert_close(text.sentence_embeds.norm(dim=-1), torch.ones(2))
    # the sentence vector is the projected end-of-text state: same projection as the words, one space
    outputs = clip_model.text_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    eos_position = batch.attention_mask[0].sum() - 1
    projected_eos = clip_model.text_projection(outputs.last_hidden_state[0, eos_position])
    torch.testing.assert_close(text.sentence_embeds[0], projected_eos / projected_eos.norm())


def test_text_only_model_gives_the_same_features(tokenizer, clip_model, tmp_path):
    text_encoder_from_clip(clip_model).save_pretrained(tmp_path)
    text_model = CLIPTextModelWithProjection.from_pretrained(tmp_path).eval()
    assert text_model.text_projection.out_features == TINY_TEXT_DIM
    batch = tokenize_prompts(tokenizer, ["a blue bird"])
    a = encode_text(clip_model, batch.input_ids, batch.attention_mask)
    b = encode_text(text_model, batch.input_ids, batch.attention_mask)
    torch.testing.assert_close(a.sentence_embeds, b.sentence_embeds)
    torch.testing.assert_close(a.word_embeds, b.word_embeds)


def test_image_features_are_differentiable_regions(clip_model):
    images = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_(True)
    features = encode_images(clip_model, images)
    grid = (32 // 8) ** 2  # tiny CLIP: 32 px input, 8 px patches
    assert features.image_embeds.shape == (2, TINY_TEXT_DIM)
    assert features.region_embeds.shape == (2, grid, TINY_TEXT_DIM)
    features.region_embeds.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_prepare_images_maps_generator_range_to_clip_normalisation():
    white, black = torch.ones(1, 3, 8, 8), -torch.ones(1, 3, 8, 8)
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.25, 1.0)
    torch.testing.assert_close(prepare_images(white, 4, mean, std), torch.tensor([1.0, 3.0, 1.0])[None, :, None, None].expand(1, 3, 4, 4))
    torch.testing.assert_close(prepare_images(black, 8, mean, std), torch.tensor([-1.0, -1.0, 0.0])[None, :, None, None].expand(1, 3, 8, 8))


def test_trained_tokenizer_is_a_clip_tokenizer(tokenizer, tmp_path):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("a red bird").input_ids)
    assert tokens == ["<|startoftext|>", "a</w>", "red</w>", "bird</w>", "<|endoftext|>"]
    assert tokenizer.model_max_length == 16
    with pytest.raises(ValueError, match="`vocab_size` must be >= 300"):
        train_clip_tokenizer(["a bird"], vocab_size=10)


def test_trained_tokenizer_ids_are_the_same_in_every_process():
    """The BPE trainer numbers symbols in hash-map order; our ids must not depend on the process (resumable runs)."""
    script = (
        "import json; from hf_stagegan.encoders import train_clip_tokenizer;"
        "t = train_clip_tokenizer(['a red bird with black wings', 'a small blue bird'] * 5, vocab_size=300);"
        "print(json.dumps(t.get_vocab(), sort_keys=True))"
    )
    vocabularies = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout for _ in range(3)}
    assert len(vocabularies) == 1
