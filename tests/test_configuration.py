import json

import pytest
from transformers import AutoConfig

from hf_stagegan import StageGANConfig, StageGANDiscriminator, StageGANGenerator


def test_defaults_follow_the_patent():
    config = StageGANConfig()
    assert config.model_type == "stagegan"
    assert config.z_dim == 100
    assert config.stage_resolutions == [64, 128, 256]
    assert config.initial_resolution == 8  # level 1: three upsamplings to 64 px
    assert config.level2_residual_blocks == 2  # [0079]
    assert config.stage_gradient == "isolated"  # claim 8
    assert config.image_skip is False  # each level draws its own image (claims 2-4)
    assert config.generator_upsampling == "nearest"  # AttnGAN's and the authors' upsampling blocks
    assert config.unconditional_discriminator_weight == 0.0  # D2 / D3: the conditional term only ([0090], [0093])
    assert config.fusion_type == "attention"
    assert (config.level2_sentence_weight, config.level3_sentence_weight, config.level3_word_weight) == (1.0, 4.0, 1.0)
    assert (config.damsm_gamma1, config.damsm_gamma2, config.damsm_gamma3) == (4.0, 5.0, 10.0)


def test_json_round_trip_and_auto_config(tmp_path):
    config = StageGANConfig(stage_resolutions=[16, 32, 64], fusion_type="memory", stage_gradient="end_to_end", image_skip=True)
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "stagegan" and saved["stage_resolutions"] == [16, 32, 64]
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, StageGANConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()


def test_discriminator_width_and_spectral_norm_per_level(tmp_path):
    config = StageGANConfig(discriminator_channels=(64, 32, 32), discriminator_spectral_norm=(False, True, True))
    assert config.discriminator_channels == [64, 32, 32]  # kept as the list JSON gives back
    assert [config.level_discriminator_channels(k) for k in (1, 2, 3)] == [64, 32, 32]
    assert [config.level_discriminator_spectral_norm(k) for k in (1, 2, 3)] == [False, True, True]
    config.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).to_diff_dict() == config.to_diff_dict()
    plain = StageGANConfig(discriminator_channels=48)
    assert [plain.level_discriminator_channels(k) for k in (1, 2, 3)] == [48, 48, 48]
    with pytest.raises(ValueError, match="`level` must be 1, 2 or 3, got 0"):
        plain.level_discriminator_channels(0)


def test_discriminator_backbone_per_level_and_its_vision_config(tmp_path):
    from transformers import CLIPVisionConfig

    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=64, patch_size=8
    )
    config = StageGANConfig(discriminator_backbone=("conv", "clip", "clip"), discriminator_vision_config=vision)
    assert config.discriminator_backbone == ["conv", "clip", "clip"] and config.uses_vision_backbone
    assert [config.level_discriminator_backbone(k) for k in (1, 2, 3)] == ["conv", "clip", "clip"]
    assert config.discriminator_vision_config == json.loads(json.dumps(vision.to_dict()))  # as config.json holds it
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert loaded.to_diff_dict() == config.to_diff_dict()
    assert CLIPVisionConfig(**loaded.discriminator_vision_config).hidden_size == 16
    plain = StageGANConfig()
    assert plain.discriminator_backbone == "conv" and not plain.uses_vision_backbone
    assert plain.discriminator_vision_config is None


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("z_dim", 0, "`z_dim` must be an int >= 1, got 0"),
        ("z_dim", 2.5, "`z_dim` must be an int >= 1, got 2.5"),
        ("generator_channels", -8, "`generator_channels` must be an int >= 1, got -8"),
        ("text_embed_dim", True, "`text_embed_dim` must be an int >= 1, got True"),
        ("level2_residual_blocks", -1, "`level2_residual_blocks` must be an int >= 0, got -1"),
        ("fusion_type", "concat", "`fusion_type` must be one of ['attention', 'memory'], got 'concat'"),
        ("stage_gradient", "frozen", "`stage_gradient` must be one of ['isolated', 'end_to_end'], got 'frozen'"),
        ("image_skip", 1, "`image_skip` must be a bool, got 1"),
        ("generator_upsampling", "bicubic", "`generator_upsampling` must be one of ['nearest', 'bilinear'], got 'bicubic'"),
        ("unconditional_discriminator_weight", -0.5, "`unconditional_discriminator_weight` must be a number >= 0.0, got -0.5"),
        ("level3_word_weight", -1.0, "`level3_word_weight` must be a number >= 0.0, got -1.0"),
        ("damsm_gamma2", 0.0, "`damsm_gamma2` must be a number > 0.0, got 0.0"),
        ("damsm_gamma1", float("nan"), "`damsm_gamma1` must be a number > 0.0, got nan"),
        ("discriminator_spectral_norm", "yes", "`discriminator_spectral_norm` must be a bool, got 'yes'"),
        ("discriminator_spectral_norm", [False, True, "no"], "`discriminator_spectral_norm[2]` must be a bool, got 'no'"),
        ("discriminator_channels", [64, 32], "`discriminator_channels` must be one value or a list of 3 (D1, D2, D3), got [64, 32]"),
        ("discriminator_channels", [64, 0, 32], "`discriminator_channels[1]` must be an int >= 1, got 0"),
        ("discriminator_backbone", "vit", "`discriminator_backbone` must be one of ['conv', 'clip'], got 'vit'"),
        ("discriminator_backbone", ["conv", "clip"], "`discriminator_backbone` must be one value or a list of 3"),
        ("discriminator_backbone", ["conv", "clip", "CLIP"], "`discriminator_backbone[2]` must be one of ['conv', 'clip'], got 'CLIP'"),
        ("discriminator_vision_config", "openai/clip", "`discriminator_vision_config` must be None or a CLIPVisionConfig as a dict, got str"),
        ("discriminator_vision_config", {"hidden_size": 16}, "must give `image_size` as an int >= 1 (a CLIPVisionConfig's fields), got None"),
        ("stage_resolutions", [64, 128], "`stage_resolutions` must be a list of 3 ints"),
        ("stage_resolutions", [20, 40, 80], "`stage_resolutions[0]` must be a multiple of 8"),
        ("stage_resolutions", [24, 48, 96], "`stage_resolutions[0]` must be a power of two"),
        ("stage_resolutions", [64, 128, 512], "expected [64, 128, 256]"),
        ("stage_resolutions", [4, 8, 16], "`stage_resolutions` must be an int >= 8, got 4"),
    ],
)
def test_invalid_values_name_field_and_value(field, value, expected):
    with pytest.raises(ValueError) as error:
        StageGANConfig(**{field: value})
    assert expected in str(error.value)


# Every way a config is made or changed, each applying `{field: value}` to a valid tiny config; `folder` holds a saved
# tiny generator (config.json + weights).
def _edit_config_json(folder, field, value):
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    return AutoConfig.from_pretrained(folder)


def _assign(folder, field, value):
    config = StageGANConfig.from_pretrained(folder)
    setattr(config, field, value)
    return config


def _update(folder, field, value):
    config = StageGANConfig.from_pretrained(folder)
    config.update({field: value})
    return config


CONFIG_PATHS = {
    "constructor": lambda folder, field, value: StageGANConfig(**{**TINY, field: value}),
    "from_dict_override": lambda folder, field, value: StageGANConfig.from_dict(dict(TINY), **{field: value}),
    "from_pretrained_override": lambda folder, field, value: StageGANConfig.from_pretrained(folder, **{field: value}),
    "auto_config_override": lambda folder, field, value: AutoConfig.from_pretrained(folder, **{field: value}),
    "model_from_pretrained_override": lambda folder, field, value: StageGANGenerator.from_pretrained(
        folder, **{field: value}
    ),
    "edited_config_json": _edit_config_json,
    "attribute_assignment": _assign,
    "update": _update,
}
TINY = dict(stage_resolutions=[16, 32, 64], generator_channels=8, discriminator_channels=8, text_embed_dim=16)


@pytest.fixture
def saved_generator(tmp_path):
    StageGANGenerator(StageGANConfig(**TINY)).save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("path", CONFIG_PATHS)
@pytest.mark.parametrize(
    "field, value, expected",
    [
        # issue 12: accepted by `from_pretrained(..., **overrides)`; G then drew 64 px at level 3, D3 gave 9 logits
        ("stage_resolutions", [16, 32, 48], "expected [16, 32, 64]"),
        ("z_dim", "abc", "`z_dim` must be an int >= 1, got 'abc'"),
        ("fusion_type", "concat", "`fusion_type` must be one of ['attention', 'memory'], got 'concat'"),
    ],
)
def test_every_way_to_make_a_config_validates(saved_generator, path, field, value, expected):
    with pytest.raises(ValueError) as error:
        CONFIG_PATHS[path](saved_generator, field, value)
    assert expected in str(error.value) and f"`{field}" in str(error.value)


def test_valid_overrides_apply_on_every_path(saved_generator):
    for path, make in CONFIG_PATHS.items():
        made = make(saved_generator, "damsm_gamma3", 20.0)
        config = made.config if isinstance(made, StageGANGenerator) else made
        assert config.damsm_gamma3 == 20.0, path
    config.stage_resolutions = (32, 64, 128)
    assert config.stage_resolutions == [32, 64, 128]  # a tuple is stored as the list JSON gives back


def test_in_place_edit_is_caught_before_a_model_is_built_or_saved(tmp_path):
    config = StageGANConfig(**TINY)
    config.stage_resolutions[2] = 48  # no assignment to the config, so nothing saw it
    for action in (
        config.validate,
        lambda: StageGANGenerator(config),
        lambda: StageGANDiscriminator(config),
        lambda: config.save_pretrained(tmp_path),
    ):
        with pytest.raises(ValueError, match=r"`stage_resolutions` must double at each level"):
            action()
    assert not (tmp_path / "config.json").exists()
