"""The pretrained-CLIP path, offline: a CLIP of openai/clip-vit-base-patch32's exact architecture and Hub config (random
weights, saved locally) and OpenAI's real BPE tokenizer built from the merges file open-clip-torch ships. CLIP_FT on it,
end to end through `examples/train.py`, is in tests/test_examples.py.

CI installs open-clip-torch without its dependencies (`.ci/run`) for that file and for its reference tokenizer, loaded
from its source file alone (the package itself would import torchvision)."""

import importlib.util

import pytest
import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

from hf_stagegan.clip_finetuning import load_or_build_clip
from hf_stagegan.encoders import (
    clip_tokenizer_from_bpe,
    encode_images,
    encode_text,
    find_clip_bpe,
    special_token_ids,
    tokenize_prompts,
    train_clip_tokenizer,
)

try:
    BPE = find_clip_bpe()
except FileNotFoundError:
    BPE = None
needs_bpe = pytest.mark.skipif(BPE is None, reason="needs open-clip-torch's BPE file: pip install --no-deps open-clip-torch")

SENTENCES = [
    "this bird has a red crown, black wings and a short pointed grey beak.",
    "A small bird with a YELLOW belly; gray wings & white-ish tail!!",
    "the bird's beak is 2.5 cm long (approx.) - café naïve 日本 🐦",
    "   multiple   spaces\tand\nnew lines  ",
]
# openai/clip-vit-base-patch32's config.json, as the Hub serves it (token ids included)
VIT_B32 = {
    "text": dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                 max_position_embeddings=77, hidden_act="quick_gelu", bos_token_id=0, eos_token_id=2, pad_token_id=1),
    "vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   image_size=224, patch_size=32, hidden_act="quick_gelu"),
    "projection_dim": 512,
}


def open_clip_reference_tokenizer():
    """open_clip's `SimpleTokenizer` (OpenAI's algorithm), from `open_clip/tokenizer.py` alone."""
    pytest.importorskip("ftfy")
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer", BPE.parent / "tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer(str(BPE))


@pytest.fixture(scope="module")
def tokenizer_vit():
    return clip_tokenizer_from_bpe(BPE)


@pytest.fixture(scope="module")
def vit_b32_dir(tmp_path_factory, tokenizer_vit):
    """A random-weight CLIP with openai/clip-vit-base-patch32's config and tokenizer, saved as the Hub repo holds it."""
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config={"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}))
    folder = tmp_path_factory.mktemp("clip-vit-base-patch32")
    model.save_pretrained(folder)
    tokenizer_vit.save_pretrained(folder)
    return folder


@needs_bpe
def test_bpe_tokenizer_gives_openais_ids(tokenizer_vit):
    reference = open_clip_reference_tokenizer()
    assert len(tokenizer_vit) == 49408
    assert (tokenizer_vit.bos_token_id, tokenizer_vit.eos_token_id) == (49406, 49407)
    for sentence in SENTENCES:
        expected = [reference.sot_token_id, *reference.encode(sentence), reference.eot_token_id]
        assert tokenizer_vit(sentence).input_ids == expected, sentence
    # ids published with transformers' CLIP examples
    assert tokenizer_vit("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer_vit("hello world").input_ids == [49406, 3306, 1002, 49407]


def test_bpe_file_errors(tmp_path):
    bad = tmp_path / "merges.txt"
    bad.write_text("#version: 0.2\na b\n")
    with pytest.raises(ValueError, match="is not OpenAI CLIP's BPE file"):
        clip_tokenizer_from_bpe(bad)


def test_clip_config_defaults_are_vit_b32():
    config = CLIPConfig()
    for key, value in VIT_B32["text"].items():
        if not key.endswith("token_id"):  # transformers' defaults have the corrected token ids
            assert getattr(config.text_config, key) == value, key
    for key, value in VIT_B32["vision"].items():
        assert getattr(config.vision_config, key) == value, key
    assert config.projection_dim == VIT_B32["projection_dim"]


@pytest.mark.slow  # builds, saves and loads 151 M parameters
@needs_bpe
def test_saved_vit_b32_loads_as_the_pretrained_path_does(vit_b32_dir, tokenizer_vit):
    clip, tokenizer = load_or_build_clip(str(vit_b32_dir))
    assert sum(p.numel() for p in clip.parameters()) == 151_277_313  # ViT-B/32's published size
    assert isinstance(tokenizer, CLIPTokenizer) and tokenizer("a red bird").input_ids == tokenizer_vit("a red bird").input_ids
    text_config = clip.config.text_config
    assert (text_config.bos_token_id, text_config.eos_token_id) == (0, 2)  # as on the Hub
    assert special_token_ids(text_config) == (49406, 49407)  # ... and what the tokenizer really uses

    batch = tokenize_prompts(tokenizer, ["a red bird", "a bird with black wings"])
    with torch.no_grad():
        text = encode_text(clip, batch.input_ids, batch.attention_mask)
        images = encode_images(clip, torch.rand(2, 3, 256, 256) * 2 - 1)
        # ids 0 ("!") and 2 ("#") are tokens like any other, whatever the config's legacy bos/eos ids say
        odd = encode_text(clip, torch.tensor([[49406, 0, 2, 320, 49407]]), torch.ones(1, 5, dtype=torch.long))
    # words are the caption's tokens only: not <|startoftext|>, <|endoftext|> or padding
    assert text.word_mask.sum(dim=1).tolist() == [3, 5]
    assert not text.word_mask[batch.input_ids >= 49406].any()
    assert odd.word_mask.tolist() == [[False, True, True, True, False]]
    assert text.sentence_embeds.shape == (2, 512) and text.word_embeds.shape == (2, batch.input_ids.shape[1], 512)
    assert images.region_embeds.shape == (2, 49, 512)  # the 7 x 7 patch grid at 224 px
    assert images.image_embeds.shape == (2, 512)


def test_from_scratch_tokenizer_ids_are_not_mistaken_for_the_legacy_config():
    tokenizer = train_clip_tokenizer(["a red bird", "a blue bird"] * 20, vocab_size=300)
    assert tokenizer.eos_token_id != 2  # `special_token_ids` reads eos 2 as OpenAI's legacy config
