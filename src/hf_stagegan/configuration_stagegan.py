"""StageGAN configuration: every hyperparameter of the three-level generator, its discriminators and its losses."""

from __future__ import annotations

import json
from functools import partial

from transformers import PretrainedConfig

FUSION_TYPES = ("attention", "memory")
STAGE_GRADIENTS = ("isolated", "end_to_end")
GENERATOR_UPSAMPLINGS = ("nearest", "bilinear")
GRADIENT_PENALTIES = ("none", "r1", "matching_aware")
DISCRIMINATOR_AUGMENTATIONS = ("translation", "cutout", "color")  # hf_stagegan.augmentation's transformations
DISCRIMINATOR_BACKBONES = ("conv", "clip")


class StageGANConfig(PretrainedConfig):
    r"""
    Configuration of a StageGAN (GR-GAN, patent CN113781598B): a text-to-image GAN that refines an image in three
    levels (noise only -> + sentence -> + words), each level with its own generator, discriminator and loss.

    Args:
        z_dim (`int`, *optional*, defaults to 100):
            Size of the Gaussian noise that level 1 turns into the first image (claim 2).
        stage_resolutions (`list[int]`, *optional*, defaults to `[64, 128, 256]`):
            Side of x1, x2 and x3. Level 1 upsamples three times from `stage_resolutions[0] // 8`; levels 2 and 3
            upsample once each, so every resolution must be twice the previous one. `[16, 32, 64]` trains on a CPU.
        generator_channels (`int`, *optional*, defaults to 32):
            Channels of the image features at levels 2 and 3 (AttnGAN's `ngf`). Level 1 starts at 8x this many
            channels and halves them at each of its three upsamplings.
        discriminator_channels (`int` or `list[int]`, *optional*, defaults to 64):
            Channels of each discriminator's first downsampling convolution; doubled per downsampling up to 8x. A
            list of 3 sets D1, D2 and D3 apart (`level_discriminator_channels(k)`): D1 reads the smallest images, so a
            wider D1 costs little (x1 has 1/16 of x3's pixels).
        text_embed_dim (`int`, *optional*, defaults to 512):
            Size of the sentence and word vectors: the text encoder's joint embedding size (CLIP's `projection_dim`).
        fusion_type (`str`, *optional*, defaults to `"attention"`):
            How levels 2 and 3 fuse text into image features: `"attention"` (AttnGAN word attention) or `"memory"`
            (DM-GAN dynamic memory). The patent names both ([0077], [0096]).
        level2_residual_blocks (`int`, *optional*, defaults to 2):
            Residual blocks of the level-2 generator; the patent uses two ([0079]).
        level3_residual_blocks (`int`, *optional*, defaults to 2):
            Residual blocks of the level-3 generator.
        stage_gradient (`str`, *optional*, defaults to `"isolated"`):
            `"isolated"`: x1's and x2's features enter the next level detached, so each level's loss updates only
            its own sub-network (claim 8). `"end_to_end"`: gradients of levels 2 and 3 flow back into the earlier
            levels, as in AttnGAN (for ablations).
        image_skip (`bool`, *optional*, defaults to `False`):
            `False`: each level draws its image from its own features alone (the patent's). `True`: levels 2 and 3
            draw a correction to the previous level's image instead: their `to_image` convolution's output is added,
            before the tanh, to the previous level's pre-tanh image upsampled x2 (bilinear), as in StyleGAN2's skip
            generator; not in the patent. Under `stage_gradient="isolated"` the previous image enters detached, as
            its features do, so each level's loss still updates only its own sub-network.
        generator_upsampling (`str`, *optional*, defaults to `"nearest"`):
            How every upsampling block of the generator doubles its feature map before its 3x3 convolution:
            `"nearest"` (AttnGAN's and the authors' code: each pixel copied into a 2x2 block) or `"bilinear"` (each
            new pixel a blend of its neighbours, a low-pass upsampling as StyleGAN's; not in the patent).
        level2_sentence_weight (`float`, *optional*, defaults to 1.0):
            Weight of Loss_CLIP_FT_s in L_G2_total (claim 6).
        level3_sentence_weight (`float`, *optional*, defaults to 4.0):
            Weight of the sentence-image term of Loss_CLIP_FT (claim 7; the patent prefers sentence > word, [0109]).
        level3_word_weight (`float`, *optional*, defaults to 1.0):
            Weight of the word-region term of Loss_CLIP_FT (claim 7).
        damsm_gamma1 (`float`, *optional*, defaults to 4.0):
            Sharpness of each word's attention over image regions (DAMSM's gamma1).
        damsm_gamma2 (`float`, *optional*, defaults to 5.0):
            How strongly the word-region score is dominated by the best-matching words (DAMSM's gamma2).
        damsm_gamma3 (`float`, *optional*, defaults to 10.0):
            Scale of the image-text similarity logits in the matching cross-entropies (DAMSM's gamma3).
        mismatched_text_weight (`float`, *optional*, defaults to 0.0):
            Weight of the matching-aware term of L_D2 and L_D3: a real image paired with a caption that does not
            describe it must be judged fake (`losses.mismatched_text_loss`). Not in the patent's formulas (0 keeps
            them exact); the authors' code uses it with weight 1. Without it a conditional discriminator never has
            to look at the text to tell real from fake.
        unconditional_discriminator_weight (`float`, *optional*, defaults to 0.0):
            Weight of an unconditional real/fake term at levels 2 and 3. The patent gives D2 and D3 only the
            conditional term ([0090], [0093]); AttnGAN, StackGAN++ and DM-GAN add an unconditional one at every level.
            When > 0, D2 and D3 get a second logit convolution that reads their image features alone (before the
            condition joins), and L_D2 / L_D3 add this weight times the same real/fake loss on that logit, L_G2 /
            L_G3 this weight times the generator loss on it. 0 keeps the patent's losses and builds no such head.
        text_loss_hard_negatives (`bool`, *optional*, defaults to `False`):
            Whether the colour-swapped captions a training batch carries (`negative_input_ids`, from
            `data.build_dataloader(num_negatives=...)`: the caption with one part's colour changed) are extra wrong
            classes of the generator's Loss_CLIP_FT (level 2's sentence term, level 3's sentence and word terms), as
            they are of CLIP_FT's own training. Against the batch's other captions alone, which differ from the true
            one in most words, the loss says little about any single part. Not in the patent (`False` keeps its
            losses exact).
        discriminator_gradient_penalty (`str`, *optional*, defaults to `"none"`):
            A regulariser of every discriminator on real pairs, added to L_Dk (not in the patent): `"none"`; `"r1"`
            (R1, the squared gradient norm with respect to the real image, times `gradient_penalty_weight / 2`);
            `"matching_aware"` (DF-GAN's MA-GP: the gradient norm with respect to the real image and its text
            condition, to the 6th power, times `gradient_penalty_weight`; D1 has no condition, so only the image).
        gradient_penalty_weight (`float`, *optional*, defaults to 2.0):
            Weight of that penalty (DF-GAN uses 2 for MA-GP; R1 is usually 0.1-10).
        discriminator_augmentation (`list[str]`, *optional*, defaults to `[]`):
            Differentiable augmentation (DiffAugment) of every image the discriminators see in training, real and
            generated, in D's update and in G's (not in the patent): the names of the transformations, applied in
            order, from `"translation"`, `"cutout"` and `"color"` (see `hf_stagegan.augmentation`). `[]` is off.
            `"color"` changes the colours the captions name, so it weakens the conditional discriminators.
        discriminator_spectral_norm (`bool` or `list[bool]`, *optional*, defaults to `True`):
            Spectral normalisation of every discriminator convolution, as in the authors' code; a list of 3 sets it
            for D1, D2 and D3 apart (`level_discriminator_spectral_norm(k)`).
        discriminator_backbone (`str` or `list[str]`, *optional*, defaults to `"conv"`):
            What a discriminator reads its image with: `"conv"`, its own strided convolutions (the patent's); or
            `"clip"`, the hidden states of a frozen CLIP image tower (CLIP_FT's, as GALIP's CLIP-based discriminator
            and Projected GAN's pretrained feature network; not in the patent), which only a small head on top of it
            learns: `discriminator_channels` sets that head's width, `discriminator_spectral_norm` its normalisation.
            A list of 3 sets D1, D2 and D3 apart (`level_discriminator_backbone(k)`). Any `"clip"` level needs
            `discriminator_vision_config`.
        discriminator_vision_config (`dict`, *optional*):
            The `CLIPVisionConfig` (as a dict) of the frozen image tower that `"clip"` discriminators share; the
            training script copies CLIP_FT's vision config and weights into it (`StageGANDiscriminator.
            load_vision_backbone`). Saved with the discriminator, so a saved discriminator is whole.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of convolutions and linear layers (DCGAN's value).

    Example:

    ```python
    >>> from hf_stagegan import StageGANConfig, StageGANGenerator

    >>> config = StageGANConfig(stage_resolutions=[16, 32, 64], generator_channels=8, text_embed_dim=32)
    >>> generator = StageGANGenerator(config)
    >>> config.stage_resolutions
    [16, 32, 64]
    ```
    """

    model_type = "stagegan"

    def __init__(
        self,
        z_dim: int = 100,
        stage_resolutions: list[int] | tuple[int, ...] = (64, 128, 256),
        generator_channels: int = 32,
        discriminator_channels: int | list[int] = 64,
        text_embed_dim: int = 512,
        fusion_type: str = "attention",
        level2_residual_blocks: int = 2,
        level3_residual_blocks: int = 2,
        stage_gradient: str = "isolated",
        image_skip: bool = False,
        generator_upsampling: str = "nearest",
        level2_sentence_weight: float = 1.0,
        level3_sentence_weight: float = 4.0,
        level3_word_weight: float = 1.0,
        damsm_gamma1: float = 4.0,
        damsm_gamma2: float = 5.0,
        damsm_gamma3: float = 10.0,
        mismatched_text_weight: float = 0.0,
        unconditional_discriminator_weight: float = 0.0,
        text_loss_hard_negatives: bool = False,
        discriminator_gradient_penalty: str = "none",
        gradient_penalty_weight: float = 2.0,
        discriminator_augmentation: list[str] | tuple[str, ...] = (),
        discriminator_spectral_norm: bool | list[bool] = True,
        discriminator_backbone: str | list[str] = "conv",
        discriminator_vision_config: dict | None = None,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.z_dim = z_dim
        self.stage_resolutions = stage_resolutions
        self.generator_channels = generator_channels
        self.discriminator_channels = discriminator_channels
        self.text_embed_dim = text_embed_dim
        self.fusion_type = fusion_type
        self.level2_residual_blocks = level2_residual_blocks
        self.level3_residual_blocks = level3_residual_blocks
        self.stage_gradient = stage_gradient
        self.image_skip = image_skip
        self.generator_upsampling = generator_upsampling
        self.level2_sentence_weight = level2_sentence_weight
        self.level3_sentence_weight = level3_sentence_weight
        self.level3_word_weight = level3_word_weight
        self.damsm_gamma1 = damsm_gamma1
        self.damsm_gamma2 = damsm_gamma2
        self.damsm_gamma3 = damsm_gamma3
        self.mismatched_text_weight = mismatched_text_weight
        self.unconditional_discriminator_weight = unconditional_discriminator_weight
        self.text_loss_hard_negatives = text_loss_hard_negatives
        self.discriminator_gradient_penalty = discriminator_gradient_penalty
        self.gradient_penalty_weight = gradient_penalty_weight
        self.discriminator_augmentation = discriminator_augmentation
        self.discriminator_spectral_norm = discriminator_spectral_norm
        self.discriminator_backbone = discriminator_backbone
        self.discriminator_vision_config = discriminator_vision_config
        self.initializer_range = initializer_range
        # AutoModel maps this config to the generator or the discriminator by `architectures` (each model's
        # `save_pretrained` writes its own class); a config that names no model builds the generator
        kwargs["architectures"] = kwargs.get("architectures") or ["StageGANGenerator"]
        super().__init__(**kwargs)

    def __setattr__(self, name, value):
        # Every way a config is made or changed ends here: the constructor, `from_dict` / `from_pretrained` keyword
        # overrides (applied with setattr after `__init__`), `update`, an edited config.json and plain assignment.
        # Each StageGAN check involves one field only, so checking the field being set keeps the whole config valid.
        check = _FIELD_CHECKS.get(name)
        if check is not None:
            if name in _LIST_FIELDS and isinstance(value, tuple):
                value = list(value)  # JSON has no tuples: keep the saved and the in-memory form equal
            if name == "discriminator_vision_config" and isinstance(value, (PretrainedConfig, dict)):
                # kept as the dict that config.json gives back (JSON keys are strings: `id2label`'s ints become "0")
                value = json.loads(json.dumps(value.to_dict() if isinstance(value, PretrainedConfig) else value))
            check(name, value)
        super().__setattr__(name, value)

    def validate(self):
        """
        Raises `ValueError` naming the first field whose value cannot build a StageGAN, then runs transformers' own
        config validators. Assignment already checks each field; this catches in-place edits such as
        `config.stage_resolutions[2] = 48`, and runs when a model is built and when the config is saved.
        """
        for name, check in _FIELD_CHECKS.items():
            check(name, getattr(self, name))
        super().validate()

    def level_discriminator_channels(self, level: int) -> int:
        """`discriminator_channels` of D`level` (1, 2 or 3): the one int, or the list's entry."""
        return _per_level(self.discriminator_channels, level)

    def level_discriminator_spectral_norm(self, level: int) -> bool:
        """`discriminator_spectral_norm` of D`level` (1, 2 or 3): the one bool, or the list's entry."""
        return _per_level(self.discriminator_spectral_norm, level)

    def level_discriminator_backbone(self, level: int) -> str:
        """`discriminator_backbone` of D`level` (1, 2 or 3): `"conv"` or `"clip"`."""
        return _per_level(self.discriminator_backbone, level)

    @property
    def uses_vision_backbone(self) -> bool:
        """Whether any discriminator reads the frozen CLIP image tower (`discriminator_backbone` `"clip"`)."""
        return any(self.level_discriminator_backbone(level) == "clip" for level in (1, 2, 3))

    @property
    def initial_resolution(self) -> int:
        """Side of the feature map that level 1 reshapes its noise into."""
        return self.stage_resolutions[0] // 8


def _per_level(value, level: int):
    if level not in (1, 2, 3):
        raise ValueError(f"`level` must be 1, 2 or 3, got {level!r}.")
    return value[level - 1] if isinstance(value, list) else value


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")


def _check_float(name, value, minimum, strict):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (value > minimum if strict else value >= minimum) and value == value
    if not ok:
        relation = ">" if strict else ">="
        raise ValueError(f"`{name}` must be a number {relation} {minimum}, got {value!r}.")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be a bool, got {value!r}.")


def _check_stage_resolutions(name, resolutions):
    if not isinstance(resolutions, (list, tuple)) or len(resolutions) != 3:
        raise ValueError(f"`{name}` must be a list of 3 ints (x1, x2, x3 sides), got {resolutions!r}.")
    for side in resolutions:
        _check_int(name, side, minimum=8)
    first, second, third = resolutions
    if first % 8 != 0:
        raise ValueError(
            f"`{name}[0]` must be a multiple of 8 (level 1 upsamples three times from {name}[0] // 8), got {first}."
        )
    if first & (first - 1):
        raise ValueError(f"`{name}[0]` must be a power of two (the discriminators halve it down to 4x4), got {first}.")
    if second != 2 * first or third != 2 * second:
        raise ValueError(
            f"`{name}` must double at each level (levels 2 and 3 upsample once each), got {list(resolutions)}; "
            f"expected {[first, 2 * first, 4 * first]}."
        )


def _one_or_per_level(check):
    """A check of one value, extended to a value or a list of 3 (one per level: D1, D2, D3)."""

    def check_one_or_three(name, value):
        if isinstance(value, (list, tuple)):
            if len(value) != 3:
                raise ValueError(f"`{name}` must be one value or a list of 3 (D1, D2, D3), got {list(value)!r}.")
            for index, item in enumerate(value):
                check(f"{name}[{index}]", item)
        else:
            check(name, value)

    return check_one_or_three


def _check_augmentation(name, policy):
    if not isinstance(policy, (list, tuple)) or not all(isinstance(item, str) for item in policy):
        raise ValueError(f"`{name}` must be a list of transformation names, got {policy!r}.")
    unknown = [item for item in policy if item not in DISCRIMINATOR_AUGMENTATIONS]
    if unknown:
        raise ValueError(
            f"`{name}` names unknown transformations {unknown} in {list(policy)!r}; "
            f"expected names from {list(DISCRIMINATOR_AUGMENTATIONS)}."
        )
    if len(set(policy)) != len(policy):
        raise ValueError(f"`{name}` names a transformation twice: {list(policy)!r}.")


def _check_vision_config(name, value):
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValueError(f"`{name}` must be None or a CLIPVisionConfig as a dict, got {type(value).__name__} {value!r}.")
    for key in ("hidden_size", "image_size", "patch_size"):
        item = value.get(key)
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            raise ValueError(f"`{name}` must give `{key}` as an int >= 1 (a CLIPVisionConfig's fields), got {item!r}.")


def _int_at_least(minimum):
    return partial(_check_int, minimum=minimum)


def _number(minimum, strict):
    return partial(_check_float, minimum=minimum, strict=strict)


# fields kept as lists (JSON has no tuples)
_LIST_FIELDS = (
    "stage_resolutions",
    "discriminator_augmentation",
    "discriminator_channels",
    "discriminator_spectral_norm",
    "discriminator_backbone",
)

# field -> check(name, value) raising ValueError; run on every assignment and by `StageGANConfig.validate`
_FIELD_CHECKS = {
    "z_dim": _int_at_least(1),
    "stage_resolutions": _check_stage_resolutions,
    "generator_channels": _int_at_least(1),
    "discriminator_channels": _one_or_per_level(_int_at_least(1)),
    "text_embed_dim": _int_at_least(1),
    "fusion_type": partial(_check_choice, choices=FUSION_TYPES),
    "level2_residual_blocks": _int_at_least(0),
    "level3_residual_blocks": _int_at_least(0),
    "stage_gradient": partial(_check_choice, choices=STAGE_GRADIENTS),
    "image_skip": _check_bool,
    "generator_upsampling": partial(_check_choice, choices=GENERATOR_UPSAMPLINGS),
    "level2_sentence_weight": _number(0.0, strict=False),
    "level3_sentence_weight": _number(0.0, strict=False),
    "level3_word_weight": _number(0.0, strict=False),
    "mismatched_text_weight": _number(0.0, strict=False),
    "unconditional_discriminator_weight": _number(0.0, strict=False),
    "text_loss_hard_negatives": _check_bool,
    "discriminator_gradient_penalty": partial(_check_choice, choices=GRADIENT_PENALTIES),
    "gradient_penalty_weight": _number(0.0, strict=False),
    "discriminator_augmentation": _check_augmentation,
    "damsm_gamma1": _number(0.0, strict=True),
    "damsm_gamma2": _number(0.0, strict=True),
    "damsm_gamma3": _number(0.0, strict=True),
    "discriminator_spectral_norm": _one_or_per_level(_check_bool),
    "discriminator_backbone": _one_or_per_level(partial(_check_choice, choices=DISCRIMINATOR_BACKBONES)),
    "discriminator_vision_config": _check_vision_config,
    "initializer_range": _number(0.0, strict=True),
}


__all__ = ["StageGANConfig"]
