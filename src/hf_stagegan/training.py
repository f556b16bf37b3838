"""One StageGAN training step, top to bottom: encode text, generate x1 x2 x3, update D1 D2 D3, update G1 G2 G3.

Claim 8 of the patent: each level's loss updates its own sub-network. There are six optimizers, one per sub-network
(G1, G2, G3, D1, D2, D3). With `config.stage_gradient == "isolated"` the generator detaches x1's and x2's features
before the next level, so the summed generator loss L_G1 + L_G2_total + L_G3_total gives G1 exactly the gradient of
L_G1, G2 that of L_G2_total and G3 that of L_G3_total: one backward pass, three independent updates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.utils import extract_model_from_parallel
from torch import nn

from .augmentation import augment_for_discriminator
from .configuration_stagegan import StageGANConfig
from .encoders import TextFeatures, encode_images, encode_text, tokenize_prompts
from .losses import (
    clip_ft_loss,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    mismatched_text_loss,
    sentence_image_loss,
    word_region_loss,
)
from .modeling_stagegan import StageGANDiscriminator, StageGANGenerator, mean_word_embedding, split_logits

GENERATOR_KEYS = ("g1", "g2", "g3")
DISCRIMINATOR_KEYS = ("d1", "d2", "d3")


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; raised before any optimizer step uses it, so the weights stay intact."""


def build_optimizers(
    generator: StageGANGenerator,
    discriminator: StageGANDiscriminator,
    generator_lr: float = 2e-4,
    discriminator_lr: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    discriminator_betas: tuple[float, float] | None = None,
) -> dict[str, torch.optim.Optimizer]:
    """
    Six Adam optimizers, one per sub-network (claim 8): keys `g1 g2 g3` (generator levels), `d1 d2 d3`.
    `betas` are the generators' (and the discriminators' unless `discriminator_betas` is given).
    """
    discriminator_betas = discriminator_betas or betas
    for name, value in (("generator_lr", generator_lr), ("discriminator_lr", discriminator_lr)):
        if not value > 0:
            raise ValueError(f"`{name}` must be > 0, got {value!r}.")
    for name, value in (("betas", betas), ("discriminator_betas", discriminator_betas)):
        if len(value) != 2 or not all(0 <= beta < 1 for beta in value):
            raise ValueError(f"`{name}` must be two numbers in [0, 1), got {value!r}.")
    optimizers = {}
    for key, level in zip(GENERATOR_KEYS, generator.levels):
        optimizers[key] = torch.optim.Adam(level.parameters(), lr=generator_lr, betas=betas)
    for key, level in zip(DISCRIMINATOR_KEYS, discriminator.levels):
        optimizers[key] = torch.optim.Adam(level.parameters(), lr=discriminator_lr, betas=discriminator_betas)
    return optimizers


LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")


def build_lr_schedulers(
    optimizers: Mapping[str, torch.optim.Optimizer],
    name: str = "constant",
    num_training_steps: int | None = None,
    num_warmup_steps: int = 0,
    start_step: int = 0,
) -> dict[str, torch.optim.lr_scheduler.LambdaLR]:
    """
    One learning-rate schedule per optimizer (diffusers' `get_scheduler`, the names of its training scripts'
    `--lr_scheduler`), all the same function of the training step. Step each once per optimisation step, after the
    optimizers. The learning rate depends on the step alone, so a resumed run passes `start_step` (the checkpoint's
    step) and gets the schedule where it left it, with no state of its own in the checkpoint.
    """
    import warnings

    from diffusers.optimization import get_scheduler

    if name not in LR_SCHEDULERS:
        raise ValueError(f"`name` must be one of {LR_SCHEDULERS}, got {name!r}.")
    if name in ("linear", "cosine") and (num_training_steps is None or num_training_steps < 1):
        raise ValueError(f"`num_training_steps` must be >= 1 for the {name!r} schedule, got {num_training_steps!r}.")
    if num_warmup_steps < 0 or (num_training_steps is not None and num_warmup_steps >= num_training_steps):
        raise ValueError(
            f"`num_warmup_steps` must be >= 0 and below `num_training_steps` ({num_training_steps}), "
            f"got {num_warmup_steps!r}."
        )
    if name == "constant" and num_warmup_steps:
        raise ValueError(f"the 'constant' schedule has no warm-up: got `num_warmup_steps` {num_warmup_steps!r}.")
    if start_step < 0:
        raise ValueError(f"`start_step` must be >= 0, got {start_step!r}.")
    schedulers = {}
    for key, optimizer in optimizers.items():
        scheduler = get_scheduler(
            name, optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps
        )
        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": the fast-forward of a resume
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(start_step):
                scheduler.step()
        schedulers[key] = scheduler
    return schedulers


@contextmanager
def frozen(*modules: nn.Module):
    """Parameters of `modules` stop collecting gradients inside the block (a generator update must not touch D)."""
    states = [(param, param.requires_grad) for module in modules for param in module.parameters()]
    for param, _ in states:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, requires_grad in states:
            param.requires_grad_(requires_grad)


def real_images_per_level(pixel_values: torch.Tensor, config: StageGANConfig) -> list[torch.Tensor]:
    """The real image x_t at each level's resolution: `(B, 3, r3, r3)` -> `[(B, 3, rk, rk)]`."""
    side = config.stage_resolutions[-1]
    if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, side, side):
        raise ValueError(f"`pixel_values` must have shape (batch, 3, {side}, {side}), got {tuple(pixel_values.shape)}.")
    return [
        pixel_values if size == side else F.interpolate(pixel_values, size=(size, size), mode="bilinear", antialias=True)
        for size in config.stage_resolutions
    ]


def level_conditions(text: TextFeatures) -> list[torch.Tensor | None]:
    """What D1, D2, D3 are conditioned on: nothing, the sentence c_s, the mean word vector c_w-hat ([0111])."""
    return [None, text.sentence_embeds, mean_word_embedding(text.word_embeds, text.word_mask)]


def swapped_captions(clip_model: nn.Module, batch: Mapping[str, torch.Tensor]) -> TextFeatures | None:
    """
    The colour-swapped captions of `batch` (`negative_input_ids` `(B, K, L)`, made by the data loader's
    `num_negatives`) encoded by `clip_model`, every output with the extra `K` dimension; None when it has none.
    """
    if batch.get("negative_input_ids") is None:
        return None
    return encode_text(clip_model, batch["negative_input_ids"], batch.get("negative_attention_mask"))


def mismatched_text(
    clip_model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    text: TextFeatures,
    negatives: TextFeatures | None = None,
) -> TextFeatures:
    """
    One caption per example that does not describe its image, for the matching-aware discriminator term: the batch's
    first colour-swapped caption where the data loader made one (`num_negatives`; the hardest mismatch, one part
    wrong), else the previous example's caption (the authors' code). `negatives`: the batch's `swapped_captions`,
    when already encoded.
    """
    rolled = TextFeatures(
        sentence_embeds=text.sentence_embeds.roll(1, dims=0),
        word_embeds=text.word_embeds.roll(1, dims=0),
        word_mask=text.word_mask.roll(1, dims=0),
    )
    if batch.get("negative_input_ids") is None:
        return rolled
    if negatives is None:
        swapped = encode_text(clip_model, batch["negative_input_ids"][:, 0], batch["negative_attention_mask"][:, 0])
    else:
        swapped = TextFeatures(
            sentence_embeds=negatives.sentence_embeds[:, 0], word_embeds=negatives.word_embeds[:, 0],
            word_mask=negatives.word_mask[:, 0],
        )
    valid = batch["negative_mask"][:, 0].bool()  # (B,)
    return TextFeatures(
        sentence_embeds=torch.where(valid[:, None], swapped.sentence_embeds, rolled.sentence_embeds),
        word_embeds=torch.where(valid[:, None, None], swapped.word_embeds, rolled.word_embeds),
        word_mask=torch.where(valid[:, None], swapped.word_mask, rolled.word_mask),
    )


def discriminate(discriminator_level: nn.Module, images: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
    return discriminator_level(images) if condition is None else discriminator_level(images, condition)


def generator_losses(
    fake_images: Sequence[torch.Tensor],
    text: TextFeatures,
    discriminator_levels: Sequence[nn.Module],
    clip_model: nn.Module,
    config: StageGANConfig,
    negatives: TextFeatures | None = None,
    negative_mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """
    The three generator losses of claims 5-7, each a tensor in the graph of its own level:
    `g1` = L_G1, `g2` = L_G2_total = L_G2 + Loss_CLIP_FT_s, `g3` = L_G3_total = L_G3 + Loss_CLIP_FT; and their parts
    (`gk_adversarial` holds the unconditional term, `gk_unconditional` unweighted, when D2 / D3 have one).

    With `config.text_loss_hard_negatives`, `negatives` (the batch's `swapped_captions`, `(B, K, ...)`) and
    `negative_mask` `(B, K)` (which slots hold one) join the wrong classes of every Loss_CLIP_FT term.
    """
    x1, x2, x3 = fake_images
    conditions = level_conditions(text)
    sentence_negatives, word_negatives = {}, {}
    if config.text_loss_hard_negatives:
        if negatives is None:
            raise ValueError(
                "`config.text_loss_hard_negatives` is True but no `negatives` were given: the batch needs colour-swapped "
                "captions (`negative_input_ids`; `data.build_dataloader(num_negatives=1)` or more)."
            )
        sentence_negatives = dict(negative_sentence_embeds=negatives.sentence_embeds, negative_mask=negative_mask)
        word_negatives = dict(
            negative_word_embeds=negatives.word_embeds, negative_word_mask=negatives.word_mask, negative_mask=negative_mask
        )
    gammas = (config.damsm_gamma1, config.damsm_gamma2, config.damsm_gamma3)
    policy = config.discriminator_augmentation  # D sees augmented images, CLIP_FT the generated ones as they are
    seen1, seen2, seen3 = (augment_for_discriminator(images, policy) for images in fake_images)
    losses = {}

    def adversarial(level: int, images: torch.Tensor) -> torch.Tensor:  # L_Gk, + the unconditional term if D has one
        logits, unconditional = split_logits(discriminate(discriminator_levels[level], images, conditions[level]))
        loss = generator_loss(logits)
        if unconditional is not None:
            losses[f"g{level + 1}_unconditional"] = generator_loss(unconditional)
            loss = loss + config.unconditional_discriminator_weight * losses[f"g{level + 1}_unconditional"]
        return loss

    losses["g1_adversarial"] = adversarial(0, seen1)

    # level 2: sentence consistency of x2's global CLIP feature (claim 6, steps y1-y5)
    features2 = encode_images(clip_model, x2)
    losses["g2_adversarial"] = adversarial(1, seen2)
    losses["clip_ft_s"] = sentence_image_loss(features2.image_embeds, text.sentence_embeds, gammas[2], **sentence_negatives)

    # level 3: sentence consistency of x3's global feature + word consistency of its regions (claim 7, z1-z7)
    features3 = encode_images(clip_model, x3)
    losses["g3_adversarial"] = adversarial(2, seen3)
    losses["clip_ft_sentence"] = sentence_image_loss(
        features3.image_embeds, text.sentence_embeds, gammas[2], **sentence_negatives
    )
    losses["clip_ft_word"] = word_region_loss(
        features3.region_embeds, text.word_embeds, text.word_mask, *gammas, **word_negatives
    )
    losses["clip_ft"] = clip_ft_loss(
        losses["clip_ft_sentence"], losses["clip_ft_word"], config.level3_sentence_weight, config.level3_word_weight
    )

    losses["g1"] = losses["g1_adversarial"]
    losses["g2"] = losses["g2_adversarial"] + config.level2_sentence_weight * losses["clip_ft_s"]
    losses["g3"] = losses["g3_adversarial"] + losses["clip_ft"]
    return losses


def _check_finite(name: str, loss: torch.Tensor):
    if not torch.isfinite(loss.detach()).all():
        raise NonFiniteLossError(f"Loss `{name}` is {loss.item()}; stopping before any optimizer uses it.")


def training_step(
    batch: Mapping[str, torch.Tensor],
    *,
    generator: nn.Module,
    discriminator_levels: Sequence[nn.Module],
    clip_model: nn.Module,
    optimizers: Mapping[str, torch.optim.Optimizer],
    accelerator=None,
) -> dict[str, float]:
    """
    One three-level step on `batch` (`pixel_values` `(B, 3, r3, r3)` in [-1, 1], `input_ids`, `attention_mask`).

    `generator` and the three `discriminator_levels` (D1, D2, D3: `discriminator.levels`) may be wrapped by
    `accelerator.prepare`; `clip_model` is the fine-tuned, frozen CLIP_FT. Returns every loss as a float.
    """
    backward = accelerator.backward if accelerator is not None else torch.Tensor.backward
    autocast = accelerator.autocast() if accelerator is not None else nullcontext()
    config: StageGANConfig = extract_model_from_parallel(generator).config
    if config.text_loss_hard_negatives and batch.get("negative_input_ids") is None:  # before any update
        raise ValueError(
            "`config.text_loss_hard_negatives` is True but the batch has no colour-swapped captions "
            "(`negative_input_ids`): build the data loader with `num_negatives=1` or more."
        )
    raw_discriminators = [extract_model_from_parallel(level) for level in discriminator_levels]
    logs = {}

    with autocast:
        # 1. encode text with the frozen CLIP_FT (claim 1): sentence vector c_s, word vectors c_w
        with torch.no_grad():
            text = encode_text(clip_model, batch["input_ids"], batch.get("attention_mask"))
            matching_aware = config.mismatched_text_weight > 0
            penalty = config.discriminator_gradient_penalty
            negatives = swapped_captions(clip_model, batch) if config.text_loss_hard_negatives else None
            mismatched = level_conditions(mismatched_text(clip_model, batch, text, negatives)) if matching_aware else None
        real_images = real_images_per_level(batch["pixel_values"], config)
        conditions = level_conditions(text)

        # 2. generate x1 (noise only), x2 (+ sentence), x3 (+ words)
        noise = torch.randn(real_images[0].shape[0], config.z_dim, device=real_images[0].device)
        fake_images = generator(
            noise=noise, sentence_embeds=text.sentence_embeds, word_embeds=text.word_embeds, word_mask=text.word_mask
        ).images

        # 3. discriminators, level by level: L_D1, L_D2, L_D3 (claims 5-7), each stepping only its own D
        for level, key in enumerate(DISCRIMINATOR_KEYS):
            optimizers[key].zero_grad(set_to_none=True)
            # real and fake in one forward (one DDP forward per backward); D has no batch statistics to mix
            real = real_images[level].detach().requires_grad_(penalty != "none")  # a leaf: the penalty's input
            real_condition = None if conditions[level] is None else conditions[level].detach()
            if penalty == "matching_aware" and real_condition is not None:
                real_condition.requires_grad_(True)
            images = [real, fake_images[level].detach()]
            condition = None if real_condition is None else [real_condition, conditions[level]]
            if matching_aware and condition is not None:  # + real images with mismatched captions (D2, D3)
                images.append(real_images[level])
                condition.append(mismatched[level])
            condition = None if condition is None else torch.cat(condition)
            # DiffAugment (config.discriminator_augmentation): drawn per image, differentiable for the penalty
            seen = augment_for_discriminator(torch.cat(images), config.discriminator_augmentation)
            logits, unconditional = split_logits(discriminate(discriminator_levels[level], seen, condition))
            logits = logits.chunk(len(images))
            loss = discriminator_loss(logits[0], logits[1])
            if len(logits) == 3:
                loss = loss + config.mismatched_text_weight * mismatched_text_loss(logits[2])
            if unconditional is not None:  # real or fake whatever the caption (the mismatched pairs' images are real)
                value = discriminator_loss(*unconditional.chunk(len(images))[:2])
                loss = loss + config.unconditional_discriminator_weight * value
                logs[f"unconditional_d{level + 1}"] = value.item()
            if penalty != "none":  # R1 or MA-GP on the real pairs
                with_text = real_condition if penalty == "matching_aware" else None
                value = gradient_penalty(logits[0], real, with_text, power=6 if penalty == "matching_aware" else 2)
                scale = config.gradient_penalty_weight / (2 if penalty == "r1" else 1)
                loss = loss + scale * value
                logs[f"gradient_penalty_d{level + 1}"] = value.item()
            _check_finite(f"loss_d{level + 1}", loss)
            backward(loss)
            optimizers[key].step()
            logs[f"loss_d{level + 1}"] = loss.item()

        # 4. generators: L_G1 + L_G2_total + L_G3_total against the updated, frozen discriminators
        for key in GENERATOR_KEYS:
            optimizers[key].zero_grad(set_to_none=True)
        with frozen(*raw_discriminators, clip_model):
            losses = generator_losses(
                fake_images, text, raw_discriminators, clip_model, config, negatives, batch.get("negative_mask")
            )
        total = losses["g1"] + losses["g2"] + losses["g3"]
        for name in ("g1", "g2", "g3"):
            _check_finite(f"loss_{name}", losses[name])
        backward(total)
        for key in GENERATOR_KEYS:
            optimizers[key].step()

    logs.update({f"loss_{name}": value.item() for name, value in losses.items()})
    return logs


@torch.no_grad()
def batch_norm_calibration_inputs(
    captions: Sequence[str],
    tokenizer,
    text_model: nn.Module,
    z_dim: int,
    batch_size: int = 64,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> list[dict[str, torch.Tensor]]:
    """
    Generator keyword arguments for `recompute_batch_norm_statistics`: `captions` encoded by `text_model` (the frozen
    CLIP_FT, in fp32 as the pipeline encodes) in batches of `batch_size`, each with its own Gaussian noise drawn from a
    generator seeded with `seed` (the global random state is left alone, so training does not depend on whether
    or when statistics are recomputed).
    """
    if len(captions) == 0:
        raise ValueError("`captions` is empty: batch-norm statistics need at least one caption.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    noise_generator = torch.Generator().manual_seed(seed)
    inputs = []
    for start in range(0, len(captions), batch_size):
        chunk = list(captions[start : start + batch_size])
        tokens = tokenize_prompts(tokenizer, chunk)
        text = encode_text(text_model, tokens.input_ids.to(device), tokens.attention_mask.to(device))
        noise = torch.randn(len(chunk), z_dim, generator=noise_generator).to(device)
        inputs.append(
            {
                "noise": noise,
                "sentence_embeds": text.sentence_embeds.float(),
                "word_embeds": text.word_embeds.float(),
                "word_mask": text.word_mask,
            }
        )
    return inputs


class _KeywordBatches(nn.Module):
    """Calls `model(**batch)`: `torch.optim.swa_utils.update_bn` passes each batch as one positional argument."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)  # update_bn restores the mode it finds here

    def forward(self, batch: Mapping[str, torch.Tensor]):
        return self.model(**batch)


def recompute_batch_norm_statistics(model: nn.Module, inputs: Iterable[Mapping[str, torch.Tensor]]) -> int:
    """
    BigGAN's "standing statistics": every batch norm of `model` forgets its running mean and variance and recomputes
    them as the plain average over the batches of `inputs` (keyword arguments of `model`), run in training mode without
    gradients (`torch.optim.swa_utils.update_bn`); weights are untouched and the model's train / eval mode is restored.
    Returns the number of batches.

    What it is for: a batch norm's running statistics belong to the weights that produced its inputs. An exponential
    moving average of a generator's weights computes other activations than the generator it averages, so the
    statistics it copies from that generator mis-normalise them.
    """
    inputs = list(inputs)
    if not inputs:
        raise ValueError("`inputs` is empty: batch-norm statistics need at least one batch.")
    torch.optim.swa_utils.update_bn(inputs, _KeywordBatches(model))
    return len(inputs)


# CPU flags (Linux `/proc/cpuinfo`) of the instructions that make bf16 autocast pay on a CPU: AVX512-BF16 dot products,
# AMX tiles. Without them oneDNN emulates bf16 and a step is slower than in fp32 (docs/performance.md).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """
    Which of `BF16_CPU_FLAGS` this CPU advertises, read from `cpuinfo` (the text of `/proc/cpuinfo`; read from the file
    when `None`). Empty where the file does not exist (not Linux): nothing is assumed.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return [flag for flag in BF16_CPU_FLAGS if flag in flags]


def resolve_mixed_precision(mixed_precision: str, device_type: str, cpuinfo: str | None = None) -> str:
    """
    The mixed precision a training run uses: `"auto"` is `"bf16"` on a CPU with bf16 instructions (`cpu_bf16_flags`)
    and `"no"` (fp32) everywhere else, GPUs included (choose fp16 / bf16 for them explicitly); `"no"`, `"fp16"` and
    `"bf16"` are returned as they are.
    """
    if mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"`mixed_precision` must be 'auto', 'no', 'fp16' or 'bf16', got {mixed_precision!r}.")
    if mixed_precision != "auto":
        return mixed_precision
    return "bf16" if device_type == "cpu" and cpu_bf16_flags(cpuinfo) else "no"


__all__ = [
    "BF16_CPU_FLAGS",
    "MIXED_PRECISIONS",
    "LR_SCHEDULERS",
    "NonFiniteLossError",
    "batch_norm_calibration_inputs",
    "build_lr_schedulers",
    "build_optimizers",
    "cpu_bf16_flags",
    "discriminate",
    "frozen",
    "generator_losses",
    "level_conditions",
    "mismatched_text",
    "real_images_per_level",
    "recompute_batch_norm_statistics",
    "resolve_mixed_precision",
    "swapped_captions",
    "training_step",
]
