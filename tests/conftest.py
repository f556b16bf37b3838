"""Tiny, seeded components shared by the tests: a CLIP tokenizer trained on toy captions, a CLIP of a few KB, and a
StageGAN config at 16/32/64 px."""

import pytest
import torch

from hf_stagegan import StageGANConfig
from hf_stagegan.encoders import build_clip_from_scratch, train_clip_tokenizer

TOY_CAPTIONS = ["a red bird", "a blue bird", "this bird has a red body and black wings", "a small blue bird"]
TINY_TEXT_DIM = 16


@pytest.fixture(scope="session")
def tokenizer():
    return train_clip_tokenizer(TOY_CAPTIONS * 5, vocab_size=300, model_max_length=16)


@pytest.fixture
def clip_model(tokenizer):
    torch.manual_seed(0)
    return build_clip_from_scratch(
        tokenizer, projection_dim=TINY_TEXT_DIM, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        image_size=32, patch_size=8,
    ).eval()


def tiny_config(**overrides) -> StageGANConfig:
    values = dict(
        stage_resolutions=[16, 32, 64], generator_channels=8, discriminator_channels=8, text_embed_dim=TINY_TEXT_DIM
    )
    values.update(overrides)
    return StageGANConfig(**values)


@pytest.fixture
def config():
    return tiny_config()


@pytest.fixture
def pipe(tokenizer, clip_model):
    """A tiny StageGANPipeline (see `test_pipeline.make_pipeline`)."""
    from .test_pipeline import make_pipeline

    return make_pipeline(tokenizer, clip_model)


@pytest.fixture
def saved(pipe, tmp_path):
    """`pipe` saved to a local folder."""
    folder = tmp_path / "saved"
    pipe.save_pretrained(folder)
    return folder
