"""hf-stagegan: the three-level text-to-image GAN of patent CN113781598B (GR-GAN) for the Hugging Face stack."""

from transformers import AutoConfig, AutoModel

from .configuration_stagegan import StageGANConfig
from .data import build_dataloader, check_columns, load_image_text_dataset
from .data.synthbirds import build_synthbirds, generate_bird, load_synthbirds
from .evaluation import color_accuracy, predict_colors
from .modeling_stagegan import (
    StageGANDiscriminator,
    StageGANDiscriminatorOutput,
    StageGANGenerator,
    StageGANGeneratorOutput,
    StageGANPreTrainedModel,
)
from .pipeline_stagegan import StageGANPipeline, StageGANPipelineOutput

__version__ = "0.1.0"

# `AutoConfig.from_pretrained(folder)` and `AutoModel.from_pretrained(folder)` resolve our classes once the package
# is imported. Generator and discriminator share `StageGANConfig`: given both, AutoModel returns the one named in the
# config's `architectures` (transformers' `_get_model_class`), which `save_pretrained` sets to the saved class.
AutoConfig.register(StageGANConfig.model_type, StageGANConfig, exist_ok=True)
AutoModel.register(StageGANConfig, (StageGANGenerator, StageGANDiscriminator), exist_ok=True)

__all__ = [
    "StageGANConfig",
    "StageGANDiscriminator",
    "StageGANDiscriminatorOutput",
    "StageGANGenerator",
    "StageGANGeneratorOutput",
    "StageGANPipeline",
    "StageGANPipelineOutput",
    "StageGANPreTrainedModel",
    "build_dataloader",
    "build_synthbirds",
    "check_columns",
    "color_accuracy",
    "generate_bird",
    "load_image_text_dataset",
    "load_synthbirds",
    "predict_colors",
]
