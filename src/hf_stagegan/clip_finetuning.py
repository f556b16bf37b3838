"""CLIP_FT: contrastive fine-tuning of a CLIP model on the target image-caption pairs, before the GAN is trained.

The patent's matching losses (claims 6, 7) judge generated images with "a preset image encoder"; DESIGN.md §1 makes it
a CLIP fine-tuned on the training data (AttnGAN calls the same step DAMSM pre-training). It is trained here with the
very losses the generator later minimises: sentence-image and word-region cross-entropy over the batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoTokenizer, CLIPModel

from .encoders import build_clip_from_scratch, encode_images, encode_text, prepare_images, train_clip_tokenizer
from .losses import sentence_image_loss, word_region_loss

# A CLIP that trains from scratch on 2 CPU cores in minutes and still resolves colours and parts of a 64 px bird:
# 8x8 patches of a 64 px image give 64 regions for the word-region loss.
SMALL_CLIP = dict(projection_dim=64, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=64, patch_size=8)


def clip_matching_losses(
    clip_model,
    batch: Mapping[str, torch.Tensor],
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
) -> dict[str, torch.Tensor]:
    """
    Sentence-image and word-region losses of real pairs (`pixel_values` in [-1, 1], `input_ids`, `attention_mask`).
    When the batch holds mismatched captions (`negative_input_ids`, `negative_attention_mask`, `negative_mask`; see
    `data.build_dataloader(num_negatives=...)`), they are hard negatives of both losses: the matcher must tell a
    caption from the same caption with one part's colour changed.
    """
    text = encode_text(clip_model, batch["input_ids"], batch.get("attention_mask"))
    image = encode_images(clip_model, batch["pixel_values"])
    negatives, negative_mask = None, None
    if batch.get("negative_input_ids") is not None:
        negatives = encode_text(clip_model, batch["negative_input_ids"], batch.get("negative_attention_mask"))
        negative_mask = batch.get("negative_mask")
    return {
        "sentence": sentence_image_loss(
            image.image_embeds, text.sentence_embeds, gamma3,
            negatives.sentence_embeds if negatives else None, negative_mask,
        ),
        "word": word_region_loss(
            image.region_embeds, text.word_embeds, text.word_mask, gamma1, gamma2, gamma3,
            negatives.word_embeds if negatives else None, negatives.word_mask if negatives else None, negative_mask,
        ),
    }


class CLIPMatchingLoss(nn.Module):
    """
    `clip_matching_losses` as a module, so that `accelerator.prepare` (DDP) wraps a forward that covers both towers
    and averages the CLIP's gradients across processes.
    """

    def __init__(self, clip_model: CLIPModel, gamma1: float = 4.0, gamma2: float = 5.0, gamma3: float = 10.0):
        super().__init__()
        self.clip_model = clip_model
        self.gammas = dict(gamma1=gamma1, gamma2=gamma2, gamma3=gamma3)

    def forward(
        self, pixel_values, input_ids, attention_mask=None, negative_input_ids=None, negative_attention_mask=None,
        negative_mask=None,
    ):
        batch = {
            "pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask,
            "negative_input_ids": negative_input_ids, "negative_attention_mask": negative_attention_mask,
            "negative_mask": negative_mask,
        }
        return clip_matching_losses(self.clip_model, batch, **self.gammas)


def clip_finetuning_step(
    batch: Mapping[str, torch.Tensor],
    matcher: nn.Module,
    optimizer: torch.optim.Optimizer,
    accelerator=None,
    word_weight: float = 1.0,
) -> dict[str, float]:
    """
    One contrastive update through `matcher`, a `CLIPMatchingLoss` (possibly prepared by accelerate); returns the
    losses as floats.
    """
    backward = accelerator.backward if accelerator is not None else torch.Tensor.backward
    with accelerator.autocast() if accelerator is not None else nullcontext():
        losses = matcher(
            batch["pixel_values"], batch["input_ids"], batch.get("attention_mask"), batch.get("negative_input_ids"),
            batch.get("negative_attention_mask"), batch.get("negative_mask"),
        )
        loss = losses["sentence"] + word_weight * losses["word"]
    if not torch.isfinite(loss.detach()):
        raise FloatingPointError(f"CLIP_FT loss is {loss.item()}; stopping before the optimizer uses it.")
    optimizer.zero_grad(set_to_none=True)
    backward(loss)
    optimizer.step()
    return {"clip_loss": loss.item(), "clip_sentence": losses["sentence"].item(), "clip_word": losses["word"].item()}


def load_or_build_clip(
    clip_model_name_or_path: str | None = None,
    captions: Iterable[str] | None = None,
    vocab_size: int = 1000,
    **clip_sizes,
) -> tuple[CLIPModel, object]:
    """
    `(clip_model, tokenizer)`: a pretrained CLIP by Hub id or folder, or, when none is given, a tokenizer trained on
    `captions` and a randomly initialised CLIP sized by `clip_sizes` (defaults: `SMALL_CLIP`) for it.
    """
    if clip_model_name_or_path is not None:
        return CLIPModel.from_pretrained(clip_model_name_or_path), AutoTokenizer.from_pretrained(clip_model_name_or_path)
    if captions is None:
        raise ValueError("`captions` are needed to train a tokenizer when no `clip_model_name_or_path` is given.")
    tokenizer = train_clip_tokenizer(captions, vocab_size=vocab_size)
    return build_clip_from_scratch(tokenizer, **{**SMALL_CLIP, **clip_sizes}), tokenizer


def run_training_steps(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    dataloader,
    step_fn,
    accelerator=None,
    max_train_steps: int = 600,
    description: str = "steps",
    log_prefix: str = "train",
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """
    `max_train_steps` calls of `step_fn(batch, module, optimizer, accelerator) -> logs`, epoch after epoch of
    `dataloader`, under `accelerator` (prepared here; DDP) or, with `accelerator=None`, in this process on `device`.
    Logs go to the progress bar and the accelerator's trackers as `{log_prefix}/{name}`; returns the last step's.
    """
    if accelerator is not None:
        module, optimizer, loader = accelerator.prepare(module, optimizer, dataloader)
    else:
        loader = dataloader
    main_process = accelerator is None or accelerator.is_local_main_process
    progress = tqdm(total=max_train_steps, desc=description, disable=not main_process)
    step, epoch, logs = 0, 0, {}
    while step < max_train_steps:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        elif hasattr(getattr(loader, "sampler", None), "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for batch in loader:
            if accelerator is None:
                batch = {key: value.to(device) for key, value in batch.items()}
            logs = step_fn(batch, module, optimizer, accelerator)
            step += 1
            progress.update(1)
            progress.set_postfix(**{k: f"{v:.3f}" for k, v in logs.items()})
            if accelerator is not None:
                accelerator.log({f"{log_prefix}/{k}": v for k, v in logs.items()}, step=step)
            if step >= max_train_steps:
                break
        epoch += 1
    progress.close()
    if accelerator is not None:
        accelerator.free_memory()  # drops accelerate's references to the optimizer and loader
    return logs


def finetune_clip(
    clip_model: CLIPModel,
    dataloader,
    accelerator=None,
    max_train_steps: int = 600,
    learning_rate: float = 5e-4,
    betas: tuple[float, float] = (0.9, 0.98),
    word_weight: float = 1.0,
    **gammas: float,
) -> CLIPModel:
    """
    CLIP_FT: `max_train_steps` contrastive updates of `clip_model` on `dataloader` (batches of `pixel_values`,
    `input_ids`, `attention_mask`) under `accelerator` (or, with `accelerator=None`, in this process alone, on the
    model's device: what building an evaluation model inside another run needs). Returns the unwrapped model in eval
    mode, frozen.
    """
    if max_train_steps < 0:
        raise ValueError(f"`max_train_steps` must be >= 0, got {max_train_steps}.")
    clip_model.train().requires_grad_(True)
    # our logits are scaled by the fixed gamma3 (DAMSM), so CLIP's learnt temperature is unused: freeze it (DDP needs
    # every trainable parameter to get a gradient)
    clip_model.logit_scale.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in clip_model.parameters() if p.requires_grad], lr=learning_rate, betas=betas, weight_decay=0.01)
    matcher = CLIPMatchingLoss(clip_model, **gammas)
    step = partial(clip_finetuning_step, word_weight=word_weight)
    run_training_steps(matcher, optimizer, dataloader, step, accelerator, max_train_steps, "CLIP_FT", "clip", clip_model.device)
    return clip_model.eval().requires_grad_(False)


class VisionAttributeClassifier(nn.Module):
    """
    A CLIP's vision tower with one linear classifier per attribute on its pooled feature (what `visual_projection`
    reads): the model `pretrain_vision_tower` trains. Only the vision tower is kept afterwards.

    `forward(pixel_values, labels)` takes images in [-1, 1] `(B, 3, H, W)` (prepared as `encode_images` prepares
    them) and class indices `(B, num_attributes)`; returns the summed cross-entropy and each attribute's batch
    accuracy `(num_attributes,)`.
    """

    def __init__(self, clip_model: CLIPModel, num_classes: Sequence[int]):
        super().__init__()
        if not num_classes or any(int(n) < 2 for n in num_classes):
            raise ValueError(f"`num_classes` must be one count >= 2 per attribute, got {list(num_classes)!r}.")
        self.vision_model = clip_model.vision_model
        self.image_size = clip_model.config.vision_config.image_size
        hidden_size = clip_model.config.vision_config.hidden_size
        self.heads = nn.ModuleList(nn.Linear(hidden_size, int(n)) for n in num_classes)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if labels.ndim != 2 or labels.shape != (pixel_values.shape[0], len(self.heads)):
            raise ValueError(
                f"`labels` must have shape (batch, {len(self.heads)}) for {len(self.heads)} attributes, got "
                f"{tuple(labels.shape)}."
            )
        pooled = self.vision_model(pixel_values=prepare_images(pixel_values, self.image_size)).pooler_output
        logits = [head(pooled) for head in self.heads]
        loss = sum(F.cross_entropy(logit.float(), labels[:, i]) for i, logit in enumerate(logits))
        accuracy = torch.stack([(logit.argmax(-1) == labels[:, i]).float().mean() for i, logit in enumerate(logits)])
        return loss, accuracy


def vision_pretraining_step(batch, classifier: nn.Module, optimizer, accelerator=None) -> dict[str, float]:
    """One supervised update of a `VisionAttributeClassifier` on `pixel_values` and `labels`; returns floats."""
    backward = accelerator.backward if accelerator is not None else torch.Tensor.backward
    with accelerator.autocast() if accelerator is not None else nullcontext():
        loss, accuracy = classifier(batch["pixel_values"], batch["labels"])
    if not torch.isfinite(loss.detach()):
        raise FloatingPointError(f"Vision pretraining loss is {loss.item()}; stopping before the optimizer uses it.")
    optimizer.zero_grad(set_to_none=True)
    backward(loss)
    optimizer.step()
    return {"loss": loss.item(), "accuracy": accuracy.mean().item()}


def pretrain_vision_tower(
    clip_model: CLIPModel,
    dataloader,
    num_classes: Sequence[int],
    accelerator=None,
    max_train_steps: int = 2400,
    learning_rate: float = 5e-4,
    betas: tuple[float, float] = (0.9, 0.98),
) -> dict[str, float]:
    """
    Supervised pretraining of `clip_model`'s vision tower on image attributes, before CLIP_FT: the offline stand-in
    for a pretrained CLIP's image encoder when a CLIP is trained from scratch. `dataloader` yields `pixel_values` and
    `labels` `(B, len(num_classes))` (`data.build_dataloader(..., label_columns=...)`); one linear head per attribute
    is trained with the tower and then dropped. Updates the tower in place; returns the last step's loss and mean
    accuracy.

    Why: a from-scratch CLIP's contrastive loss is met mostly by the body colour and learns small parts barely. On
    SynthBirds (10 000 birds, 5 colour-swapped negatives per caption), the true caption beats 5 crown-colour swaps on
    0.34 of real held-out birds after 2400 contrastive steps, and on 0.65 after 2400 steps of this pretraining then
    1200 contrastive steps (chance 0.17; docs/results.md).
    """
    if max_train_steps < 0:
        raise ValueError(f"`max_train_steps` must be >= 0, got {max_train_steps}.")
    classifier = VisionAttributeClassifier(clip_model, num_classes).to(clip_model.device).train()
    classifier.requires_grad_(True)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=learning_rate, betas=betas, weight_decay=0.01)
    return run_training_steps(
        classifier, optimizer, dataloader, vision_pretraining_step, accelerator, max_train_steps,
        "vision pretraining", "vision_pretraining", clip_model.device,
    )


__all__ = [
    "SMALL_CLIP",
    "CLIPMatchingLoss",
    "VisionAttributeClassifier",
    "clip_finetuning_step",
    "clip_matching_losses",
    "finetune_clip",
    "load_or_build_clip",
    "pretrain_vision_tower",
    "run_training_steps",
    "vision_pretraining_step",
]
