import json

import pytest
from transformers import AutoConfig

from hf_stagegan import StageGANConfig


def test_defaults_follow_the_patent():
    config = StageGANConfig()
    assert config.model_type == "stagegan"
    assert config.z_dim == 100
    assert config.stage_resolutions == [64, 128, 256]
    assert config.initial_resolution == 8  # level 1: three upsamplings to 64 px
    assert config.level2_residual_blocks == 2  # [0079]
    assert config.stage_gradient == "isolated"  # claim 8
    assert config.fusion_type == "attention"
    assert (config.level2_sentence_weight, config.level3_sentence_weight, config.level3_word_weight) == (1.0, 4.0, 1.0)
    assert (config.damsm_gamma1, config.damsm_gamma2, config.damsm_gamma3) == (4.0, 5.0, 10.0)


def test_json_round_trip_and_auto_config(tmp_path):
    config = StageGANConfig(stage_resolutions=[16, 32, 64], fusion_type="memory", stage_gradient="end_to_end")
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "stagegan" and saved["stage_resolutions"] == [16, 32, 64]
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, StageGANConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()


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
        ("level3_word_weight", -1.0, "`level3_word_weight` must be a number >= 0.0, got -1.0"),
        ("damsm_gamma2", 0.0, "`damsm_gamma2` must be a number > 0.0, got 0.0"),
        ("damsm_gamma1", float("nan"), "`damsm_gamma1` must be a number > 0.0, got nan"),
        ("discriminator_spectral_norm", "yes", "`discriminator_spectral_norm` must be a bool, got 'yes'"),
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
