"""hf-stagegan: the three-level text-to-image GAN of patent CN113781598B (GR-GAN) for the Hugging Face stack."""

from transformers import AutoConfig, AutoModel

from .configuration_stagegan import StageGANConfig
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
# is imported; the generator is the base model, the discriminator is recorded in `auto_map` by its class name.
AutoConfig.register(StageGANConfig.model_type, StageGANConfig, exist_ok=True)
AutoModel.register(StageGANConfig, StageGANGenerator, exist_ok=True)

__all__ = [
    "StageGANConfig",
    "StageGANDiscriminator",
    "StageGANDiscriminatorOutput",
    "StageGANGenerator",
    "StageGANGeneratorOutput",
    "StageGANPipeline",
    "StageGANPipelineOutput",
    "StageGANPreTrainedModel",
]
