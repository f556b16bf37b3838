"""StageGANPipeline: text -> CLIP sentence and word vectors -> three-level generator -> images (x1, x2, x3).

A diffusers `DiffusionPipeline`, so it saves, loads, moves and offloads like any other pipeline. Its generator lives
in this package, not in diffusers; its Hub side (`download`, checked `from_pretrained`, `save_pretrained` and
`push_to_hub` with the model card) comes from `hf_stagegan.hub.StageGANPipelineHubMixin`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput, logging, replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor
from torch import nn
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from .encoders import TextFeatures, check_text_features, encode_text, repeat_features
from .hub import StageGANPipelineHubMixin
from .modeling_stagegan import StageGANGenerator

logger = logging.get_logger(__name__)

OUTPUT_TYPES = ("pil", "np", "pt")

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from hf_stagegan import StageGANPipeline

        >>> pipe = StageGANPipeline.from_pretrained("org/stagegan-cub")  # a Hub id or a local folder
        >>> generator = torch.Generator().manual_seed(0)
        >>> image = pipe("this bird has a red body and black wings", generator=generator).images[0]
        >>> image.save("bird.png")

        >>> # every level's images (64, 128 and 256 px), noise truncated at 1.0 (BigGAN's truncation trick)
        >>> out = pipe(["a red bird", "a blue bird"], return_all_levels=True, truncation_threshold=1.0)
        >>> [image.size for image in out.level_images[0]]  # x1 of each prompt
        [(64, 64), (64, 64)]
        ```
"""


@dataclass
class StageGANPipelineOutput(BaseOutput):
    """
    Output of [`StageGANPipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            The last level's images (x3), `batch = len(prompt) * num_images_per_prompt` of them, in [0, 1] for `"np"`
            `(batch, H, W, 3)` and `"pt"` `(batch, 3, H, W)`.
        level_images (`tuple`, *optional*):
            With `return_all_levels=True`: the images of every level, `(x1, x2, x3)`, each in the format of `images`
            (x1 at `stage_resolutions[0]`, x2 at `stage_resolutions[1]`, x3 at `stage_resolutions[2]`).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    level_images: tuple[list[PIL.Image.Image] | np.ndarray | torch.Tensor, ...] | None = None


def truncated_noise(
    shape: tuple[int, int],
    threshold: float,
    generator: torch.Generator | list[torch.Generator] | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """
    Gaussian noise whose values all lie in `[-threshold, threshold]`: BigGAN's truncation trick. Every value beyond
    the threshold is resampled (from the same generator) until none is left, so the result is an exactly truncated
    normal. With a list of generators, row `i` only draws from `generator[i]`, as in `randn_tensor`.
    """
    if isinstance(generator, list) and len(generator) > 1:
        rows = [truncated_noise((1, *shape[1:]), threshold, g, device, dtype) for g in generator]
        return torch.cat(rows, dim=0)
    if isinstance(generator, list):
        generator = generator[0]
    noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    outside = noise.abs() > threshold
    while outside.any():
        count = int(outside.sum())
        noise[outside] = randn_tensor((count,), generator=generator, device=device, dtype=dtype)
        outside = noise.abs() > threshold
    return noise


@contextmanager
def _eval_mode(*modules: nn.Module | None) -> Iterator[None]:
    """Run in eval mode (BatchNorm running statistics, no dropout), then give every submodule back its own mode."""
    modules = [module for module in modules if module is not None]  # components loaded as None
    modes = [(submodule, submodule.training) for module in modules for submodule in module.modules()]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for submodule, mode in modes:
            submodule.training = mode


class StageGANPipeline(StageGANPipelineHubMixin, DiffusionPipeline):
    r"""
    Text-to-image generation with a StageGAN (GR-GAN, patent CN113781598B): one forward pass, no denoising loop.
    Level 1 turns noise into x1, level 2 refines it with the sentence vector into x2, level 3 with the word vectors
    into x3.

    This model inherits from [`~diffusers.DiffusionPipeline`]. Check the superclass documentation for the generic
    methods implemented for all pipelines (downloading, saving, running on a particular device, etc.).

    Args:
        tokenizer ([`~transformers.CLIPTokenizer`]):
            The CLIP tokenizer of the text encoder.
        text_encoder ([`~transformers.CLIPTextModelWithProjection`]):
            The text half of the (fine-tuned) CLIP: gives the sentence vector and one vector per word, in CLIP's joint
            space. Build it from a full `CLIPModel` with [`~hf_stagegan.encoders.text_encoder_from_clip`].
        image_generator ([`StageGANGenerator`]):
            The three-level generator. (Not named `generator`, which is the `torch.Generator` argument of `__call__`.)
    """

    model_cpu_offload_seq = "text_encoder->image_generator"
    # without them the pipeline still draws from `prompt_embeds` (encode once, then free the text encoder's memory)
    _optional_components = ["tokenizer", "text_encoder"]

    def __init__(
        self,
        tokenizer: CLIPTokenizer,
        text_encoder: CLIPTextModelWithProjection,
        image_generator: StageGANGenerator,
    ):
        super().__init__()
        if text_encoder is not None and image_generator is not None:
            text_dim, generator_dim = text_encoder.config.projection_dim, image_generator.config.text_embed_dim
            if text_dim != generator_dim:
                raise ValueError(
                    f"`text_encoder.config.projection_dim` ({text_dim}) must equal "
                    f"`image_generator.config.text_embed_dim` ({generator_dim}): the generator reads the text vectors."
                )
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, image_generator=image_generator)
        # the generator's images are in [-1, 1]; do_normalize maps them back to [0, 1] on the way out
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_resize=False, do_normalize=True)

    def encode_prompt(
        self, prompt: str | list[str], device: torch.device | None = None, num_images_per_prompt: int = 1
    ) -> TextFeatures:
        r"""
        Sentence vectors `(batch, D)`, word vectors `(batch, L, D)` and word mask `(batch, L)` of `prompt`, each
        prompt repeated `num_images_per_prompt` times (`batch = len(prompt) * num_images_per_prompt`). A prompt longer
        than the tokenizer's limit is truncated, and the dropped text logged as a warning.
        """
        self._check_text_components(prompt)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        device = device or self._execution_device
        max_length = self.tokenizer.model_max_length
        text_inputs = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        untruncated_ids = self.tokenizer(prompts, padding=False, truncation=False, verbose=False).input_ids
        for text, ids in zip(prompts, untruncated_ids):
            if len(ids) > max_length:
                # the tokenizer keeps the first max_length - 1 tokens and the end token
                removed_text = self.tokenizer.decode(ids[max_length - 1 : -1])
                logger.warning(
                    f"The following part of your input was truncated because the tokenizer can only handle sequences "
                    f"up to {max_length} tokens: {removed_text!r} (prompt {text!r})."
                )

        features = encode_text(
            self.text_encoder, text_inputs.input_ids.to(device), text_inputs.attention_mask.to(device)
        )
        return repeat_features(features, num_images_per_prompt)

    def _check_text_components(self, prompt) -> None:
        missing = [name for name in ("tokenizer", "text_encoder") if getattr(self, name) is None]
        if missing:
            raise ValueError(
                f"`prompt` ({prompt!r}) needs the pipeline's {' and '.join(missing)}, which it was loaded without "
                f"({', '.join(f'`{name}=None`' for name in missing)}). Pass `prompt_embeds` (from `encode_prompt` of a "
                "pipeline that has a text encoder) instead, or load the pipeline with its text encoder and tokenizer."
            )

    def check_inputs(
        self,
        prompt,
        prompt_embeds,
        num_images_per_prompt,
        generator,
        latents,
        truncation_threshold,
        output_type,
    ) -> int:
        """Raises `ValueError` / `TypeError` naming the bad argument and its value; returns the number of images."""
        if self.image_generator is None:
            raise ValueError(
                "This pipeline has no `image_generator` (it was loaded with `image_generator=None`), so it cannot "
                "draw images; it can only `encode_prompt`."
            )
        if prompt is None and prompt_embeds is None:
            raise ValueError("Provide either `prompt` or `prompt_embeds`; got `prompt=None` and `prompt_embeds=None`.")
        if prompt is not None and prompt_embeds is not None:
            raise ValueError(
                f"Cannot forward both `prompt` ({prompt!r}) and `prompt_embeds`; pass only one of the two."
            )

        if prompt is not None:
            if isinstance(prompt, str):
                prompts = [prompt]
            elif isinstance(prompt, (list, tuple)):
                prompts = list(prompt)
            else:
                raise TypeError(
                    f"`prompt` has to be of type `str` or `list[str]`, got {type(prompt).__name__}: {prompt!r}."
                )
            if not prompts:
                raise ValueError(f"`prompt` must contain at least one prompt, got {prompt!r}.")
            for index, text in enumerate(prompts):
                name = "prompt" if isinstance(prompt, str) else f"prompt[{index}]"
                if not isinstance(text, str):
                    raise TypeError(f"`{name}` has to be of type `str`, got {type(text).__name__}: {text!r}.")
                if not text.strip():
                    raise ValueError(f"`{name}` must be a non-empty string, got {text!r}.")
            self._check_text_components(prompt)
            batch_size = len(prompts)
        else:
            batch_size = check_text_features(prompt_embeds, self.image_generator.config.text_embed_dim, "prompt_embeds")

        if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int):
            raise TypeError(
                f"`num_images_per_prompt` has to be an int, got {type(num_images_per_prompt).__name__}: "
                f"{num_images_per_prompt!r}."
            )
        if num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` must be >= 1, got {num_images_per_prompt}.")
        num_images = batch_size * num_images_per_prompt

        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {list(OUTPUT_TYPES)}, got {output_type!r}.")

        if isinstance(generator, list) and len(generator) != num_images:
            raise ValueError(
                f"You have passed a list of generators of length {len(generator)}, but requested an effective batch "
                f"size of {num_images} ({batch_size} prompts x num_images_per_prompt={num_images_per_prompt}). "
                "Make sure the batch size matches the length of the generators."
            )

        if latents is not None:
            if not isinstance(latents, torch.Tensor):
                raise TypeError(f"`latents` has to be a torch.Tensor, got {type(latents).__name__}.")
            expected = (num_images, self.image_generator.config.z_dim)
            if tuple(latents.shape) != expected:
                raise ValueError(
                    f"`latents` must have shape {expected} (batch * num_images_per_prompt, z_dim), "
                    f"got {tuple(latents.shape)}."
                )

        if truncation_threshold is not None:
            if isinstance(truncation_threshold, bool) or not isinstance(truncation_threshold, (int, float)):
                raise TypeError(f"`truncation_threshold` has to be a number, got {truncation_threshold!r}.")
            if not (truncation_threshold > 0 and math.isfinite(truncation_threshold)):
                raise ValueError(f"`truncation_threshold` must be a finite number > 0, got {truncation_threshold!r}.")
            if latents is not None:
                raise ValueError(
                    f"`truncation_threshold` ({truncation_threshold}) only applies to sampled noise; got `latents` "
                    "too. Truncate your latents yourself (see `truncated_noise`) or drop one of the two."
                )
        return num_images

    def prepare_latents(self, num_images, dtype, device, generator, latents=None, truncation_threshold=None):
        """
        The noise z, `(num_images, z_dim)`: `latents` as given, or sampled (truncated when asked). Noise for a bf16 or
        fp16 generator is sampled in fp32 and rounded, so that a seed draws the same image in every dtype.
        """
        if latents is not None:
            return latents.to(device=device, dtype=dtype)
        shape = (num_images, self.image_generator.config.z_dim)
        sample_dtype = torch.promote_types(dtype, torch.float32)
        if truncation_threshold is not None:
            noise = truncated_noise(shape, truncation_threshold, generator=generator, device=device, dtype=sample_dtype)
        else:
            noise = randn_tensor(shape, generator=generator, device=device, dtype=sample_dtype)
        return noise.to(dtype)

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: TextFeatures | None = None,
        truncation_threshold: float | None = None,
        return_all_levels: bool = False,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> StageGANPipelineOutput | tuple:
        r"""
        Generates images for `prompt`.

        Args:
            prompt (`str` or `list[str]`):
                The prompt(s) to draw. Omit it when passing `prompt_embeds`. A prompt longer than the tokenizer's
                limit is truncated (the dropped text is logged).
            num_images_per_prompt (`int`, *optional*, defaults to 1):
                Images per prompt; images of one prompt are consecutive in the output.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Makes generation deterministic. A list gives one generator per image: image `i` then depends only on
                `generator[i]`, so a batch equals its prompts run one by one.
            latents (`torch.Tensor` of shape `(batch * num_images_per_prompt, z_dim)`, *optional*):
                The noise z; sampled from `generator` when omitted.
            prompt_embeds ([`~hf_stagegan.encoders.TextFeatures`], *optional*):
                Precomputed text features (sentence vectors, word vectors and word mask together, as returned by
                [`encode_prompt`]), instead of `prompt`. Their batch is the number of prompts.
            truncation_threshold (`float`, *optional*):
                BigGAN's truncation trick: every noise value with `|z| > truncation_threshold` is resampled until none
                is left. Lower values trade variety for fidelity. Not combinable with `latents`.
            return_all_levels (`bool`, *optional*, defaults to `False`):
                Also return every level's images (x1, x2, x3: 64, 128 and 256 px by default) in `level_images`.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"` (`list[PIL.Image.Image]`), `"np"` (`np.ndarray`, `(batch, H, W, 3)` in [0, 1]) or `"pt"`
                (`torch.Tensor`, `(batch, 3, H, W)` in [0, 1]).
            return_dict (`bool`, *optional*, defaults to `True`):
                Return a [`StageGANPipelineOutput`] instead of a tuple `(images,)` (`(images, level_images)` with
                `return_all_levels=True`).

        Examples:

        Returns:
            [`StageGANPipelineOutput`] or `tuple`.
        """
        # 0. check inputs
        num_images = self.check_inputs(
            prompt, prompt_embeds, num_images_per_prompt, generator, latents, truncation_threshold, output_type
        )
        device = self._execution_device
        dtype = self.image_generator.dtype

        with _eval_mode(self.text_encoder, self.image_generator):
            # 1. encode the prompt: sentence vector (level 2) and word vectors + mask (level 3)
            if prompt_embeds is None:
                text = self.encode_prompt(prompt, device, num_images_per_prompt)
            else:
                text = repeat_features(prompt_embeds, num_images_per_prompt)

            # 2. the noise z
            noise = self.prepare_latents(num_images, dtype, device, generator, latents, truncation_threshold)

            # 3. generate x1 -> x2 -> x3 in one pass
            images = self.image_generator(
                noise=noise,
                sentence_embeds=text.sentence_embeds.to(device=device, dtype=dtype),
                word_embeds=text.word_embeds.to(device=device, dtype=dtype),
                word_mask=text.word_mask.to(device),
                num_levels=3,
                return_dict=True,
            ).images  # ((B, 3, r1, r1), (B, 3, r2, r2), (B, 3, r3, r3)) in [-1, 1]

        # 4. post-process: [-1, 1] -> [0, 1] -> output_type
        level_images = None
        if return_all_levels:
            level_images = tuple(self.image_processor.postprocess(level, output_type) for level in images)
            final = level_images[-1]
        else:
            final = self.image_processor.postprocess(images[-1], output_type)

        self.maybe_free_model_hooks()

        if not return_dict:
            return (final, level_images) if return_all_levels else (final,)
        return StageGANPipelineOutput(images=final, level_images=level_images)


__all__ = ["StageGANPipeline", "StageGANPipelineOutput", "truncated_noise"]
