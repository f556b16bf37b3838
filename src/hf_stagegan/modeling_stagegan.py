"""StageGAN models: building blocks, text fusion, the three-level generator and its three discriminators.

Patent CN113781598B (GR-GAN). Level 1 turns noise alone into x1 (claim 2); level 2 fuses the sentence vector into
x1's image features and refines them into x2 (claim 3); level 3 fuses the word vectors into x2's features and refines
them into x3 (claim 4). D1 judges realism only, D2 judges (image, sentence), D3 judges (image, mean of the words).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm, spectral_norm
from transformers import CLIPVisionConfig, CLIPVisionModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_stagegan import StageGANConfig
from .encoders import prepare_images

# ---------------------------------------------------------------------------------------------------------------------
# Outputs


@dataclass
class StageGANGeneratorOutput(ModelOutput):
    """
    Args:
        images (`tuple[torch.FloatTensor]`):
            One image per level that was run, in [-1, 1]: x1 `(batch, 3, r1, r1)`, x2 `(batch, 3, r2, r2)`,
            x3 `(batch, 3, r3, r3)` where `(r1, r2, r3) = config.stage_resolutions`.
        hidden_states (`tuple[torch.FloatTensor]`, *optional*, returned when `output_hidden_states=True` is passed or
            `config.output_hidden_states=True`):
            One feature map per level that was run: the image features that level turned into its image (what its
            `to_image` head reads, and what the next level fuses text into), `(batch, generator_channels, rk, rk)`.
            h1: level 1's noise projection after its three upsampling blocks; h2: h1 (detached under
            `stage_gradient="isolated"`) fused with the sentence, through level 2's residual blocks and upsampling;
            h3: the same from h2 with the words at level 3.
    """

    images: tuple[torch.FloatTensor, ...] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class StageGANDiscriminatorOutput(ModelOutput):
    """
    Args:
        logits (`torch.FloatTensor` of shape `(batch,)`):
            Real/fake logit of the level's discriminator; `sigmoid(logits)` is the patent's D(.).
        unconditional_logits (`torch.FloatTensor` of shape `(batch,)`, *optional*, D2 and D3 when
            `config.unconditional_discriminator_weight > 0`):
            The level's real/fake logit from its image features alone, before the condition joins.
        hidden_states (`tuple[torch.FloatTensor]`, *optional*, returned when `output_hidden_states=True` is passed or
            `config.output_hidden_states=True`):
            The level's feature maps from the image inward: the output of each strided 4x4 convolution (after its
            LeakyReLU), `(batch, ndf * min(2**i, 8), r / 2**(i+1), r / 2**(i+1))` for `i = 0 .. log2(r / 4) - 1` where
            `ndf = config.level_discriminator_channels(k)` for level k, ending at 4x4; for D2 and D3 then the joint
            image-condition features that the logit convolution reads, `(batch, C, 4, 4)` with `C` the last map's
            channels. A `"clip"` level (`config.level_discriminator_backbone(k)`) starts from the frozen tower's
            patch grid instead: its 1x1 convolution's output `(batch, 2 * ndf, g, g)` (g = the tower's patches per
            side), then each strided convolution's, doubling the channels, down to at most 4x4, then (D2, D3) the
            joint features.
    """

    logits: torch.FloatTensor | None = None
    unconditional_logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Building blocks (AttnGAN / DM-GAN style)


def conv3x3(in_channels: int, out_channels: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=bias)


def glu(hidden_states: torch.Tensor) -> torch.Tensor:
    """
    GLU over channels, `a * sigmoid(b)` for `(a, b)` the two halves: `(B, 2C, H, W) -> (B, C, H, W)`.

    With a gradient to record it is computed as those two elementwise ops rather than aten's `glu`: on the CPU
    `glu_backward` is 2-3x slower than the backward of `a * sigmoid(b)` on the generator's maps (channels-last, bf16 or
    fp32; `benchmarks/glu_backward.py`), and it returns a contiguous (NCHW) gradient for a channels-last input, on which
    the batch-norm backward before it runs about 6x slower. The two ops keep the gradient channels-last. Without
    one (inference) aten's single fused kernel is used.
    """
    if not (torch.is_grad_enabled() and hidden_states.requires_grad):
        return F.glu(hidden_states, dim=1)
    value, gate = hidden_states.chunk(2, dim=1)
    return value * torch.sigmoid(gate)


class GLU(nn.GLU):
    """`nn.GLU(dim=1)` computed by `glu` (a channels-last gradient in training)."""

    def __init__(self):
        super().__init__(dim=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return glu(hidden_states)


class EvalWeightCache(nn.Module):
    """
    Remembers weights that eval mode derives from the module's parameters and buffers (a folded batch norm, phase
    kernels, cast to the input's dtype), so that inference does not redo that work on every call.

    The cache is used only while no autograd graph is recorded (`torch.no_grad()`, `torch.inference_mode()`, as the
    pipeline runs), and its key holds the dtype asked for plus every parameter's and buffer's storage and version
    counter: an optimizer step, an EMA update, `load_state_dict` or a train-mode batch norm update all bump a version
    and invalidate it. `.to()` / `.cuda()` / `.half()` drop it. Weights that are inference tensors (a model moved
    inside `torch.inference_mode()`) have no version counter, so nothing is cached for them.
    """

    def cached_eval_weights(self, dtype: torch.dtype, build):
        tensors = [*self.parameters(), *self.buffers()]
        if torch.is_grad_enabled() or any(t.is_inference() for t in tensors):
            return build()
        key = (dtype, *((t.device, t.dtype, t.data_ptr(), t._version) for t in tensors))
        cached = self.__dict__.get("_eval_weights")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_eval_weights"] = (key, build())
        return cached[1]

    def _apply(self, fn, recurse=True):
        self.__dict__.pop("_eval_weights", None)
        return super()._apply(fn, recurse)


class ConvNorm(EvalWeightCache):
    """
    3x3 conv then batch norm. In eval mode the norm is folded into the conv's weights and bias, which saves a full
    pass over the feature map (the largest ones are `(B, 64, 256, 256)`); the parameters are the usual two modules.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = conv3x3(in_channels, out_channels)
        self.norm = nn.BatchNorm2d(out_channels)

    def folded_weight_and_bias(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Eval-mode conv weight `(Cout, Cin, 3, 3)` and bias `(Cout,)` with the norm's running statistics folded in,
        computed in at least fp32 (in bf16, `running_var + eps` and the products would round); cast them to `dtype`.
        """
        compute = torch.promote_types(dtype, torch.float32)
        norm = self.norm
        scale = norm.weight.to(compute) * torch.rsqrt(norm.running_var.to(compute) + norm.eps)  # (Cout,)
        weight = self.conv.weight.to(compute) * scale[:, None, None, None]
        bias = norm.bias.to(compute) - norm.running_mean.to(compute) * scale
        return weight, bias

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.norm(self.conv(hidden_states))
        dtype = hidden_states.dtype
        weight, bias = self.cached_eval_weights(
            dtype, lambda: tuple(t.to(dtype) for t in self.folded_weight_and_bias(dtype))
        )
        return F.conv2d(hidden_states, weight, bias, padding=1)


# Nearest x2 upsampling then a 3x3 conv equals four 2x2 convs on the small map, one per output phase (sub-pixel
# convolution): output row 2i+a reads upsampled rows 2i+a-1..2i+a+1, which are small-map rows (i-1, i, i) for a = 0
# and (i, i, i+1) for a = 1. `_PHASE_TAPS[a]` sums the 3x3 kernel's rows (and columns) onto the two small-map rows
# each phase reads. 16 instead of 36 multiply-adds per output pixel and input channel, and no upsampled copy.
_PHASE_TAPS = ((1, 0, 0), (0, 1, 1)), ((1, 1, 0), (0, 0, 1))  # (phase a, tap, kernel row)


def phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """3x3 kernel `(Cout, Cin, 3, 3)` -> 2x2 kernel of each output phase `(2, 2, Cout, Cin, 2, 2)` (rows a, cols b)."""
    taps = torch.tensor(_PHASE_TAPS, dtype=weight.dtype, device=weight.device)  # (2, 2, 3)
    return torch.einsum("ait,octu,bju->abocij", taps, weight, taps)


def interleave_phases(phases: torch.Tensor) -> torch.Tensor:
    """
    `(B, 4C, H+1, W+1)` maps of the four output phases (channels ordered phase-row, phase-column, C), computed by a
    2x2 conv with padding 1, -> the `(B, C, 2H, 2W)` channels-last image: `out[..., 2i+a, 2j+b] = phases[ab][..., i+a, j+b]`.
    """
    batch, channels, height, width = phases.shape[0], phases.shape[1] // 4, phases.shape[2] - 1, phases.shape[3] - 1
    out = torch.empty(
        batch, channels, 2 * height, 2 * width, dtype=phases.dtype, device=phases.device, memory_format=torch.channels_last
    )
    out_view = out.permute(0, 2, 3, 1).view(batch, height, 2, width, 2, channels)  # (B, H, a, W, b, C), no copy
    phases = phases.permute(0, 2, 3, 1).unflatten(3, (2, 2, channels))  # (B, H+1, W+1, a, b, C)
    for a in (0, 1):
        for b in (0, 1):
            out_view[:, :, a, :, b] = phases[:, a : a + height, b : b + width, a, b]
    return out


class UpBlock(EvalWeightCache, nn.Sequential):
    """
    x2 upsampling (`mode`: `"nearest"` or `"bilinear"`, `config.generator_upsampling`), 3x3 conv, batch norm, GLU:
    `(B, Cin, H, W) -> (B, Cout, 2H, 2W)`.

    In training the four children run in turn (batch statistics need the whole upsampled map). In eval mode a nearest
    block computes the same function without materialising the upsampled map: four 2x2 phase convs on the input (see
    `phase_kernels`, 2.25x fewer FLOPs) with the norm folded in, and the GLU on the small phase maps before they are
    interleaved. A bilinear block's upsampled pixels mix their neighbours, which no 2x2 phase kernel reproduces: it
    runs its children in turn, with the norm folded into the conv (`ConvNorm`).
    """

    def __init__(self, in_channels: int, out_channels: int, mode: str = "nearest"):
        upsample = nn.Upsample(scale_factor=2, mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
        super().__init__(upsample, ConvNorm(in_channels, out_channels * 2), GLU())

    def eval_phase_kernels(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The folded phase kernels `(8Cout, Cin, 2, 2)` and bias `(8Cout,)`, channels ordered (GLU half, phase, Cout)."""
        weight, bias = self[1].folded_weight_and_bias(dtype)
        kernels = phase_kernels(weight).flatten(0, 1)  # (4, 2Cout, Cin, 2, 2)
        # ordered (GLU half, phase, Cout) so that one GLU gates every phase at once
        kernels = kernels.unflatten(1, (2, -1)).transpose(0, 1).flatten(0, 2)  # (2 * 4 * Cout, Cin, 2, 2)
        bias = bias.unflatten(0, (2, 1, -1)).expand(-1, 4, -1).flatten()  # (2 * 4 * Cout,)
        return kernels.to(dtype), bias.to(dtype)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.training or self[0].mode != "nearest":
            return super().forward(hidden_states)
        dtype = hidden_states.dtype
        kernels, bias = self.cached_eval_weights(dtype, lambda: self.eval_phase_kernels(dtype))
        phases = F.conv2d(hidden_states, kernels, bias, padding=1)  # (B, 8Cout, H+1, W+1)
        return interleave_phases(F.glu(phases, dim=1))  # (B, Cout, 2H, 2W)


class ResBlock(nn.Module):
    """AttnGAN residual block: `x + BN(conv(GLU(BN(conv(x)))))`, shape-preserving."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(ConvNorm(channels, channels * 2), GLU(), ConvNorm(channels, channels))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states + self.block(hidden_states)


class ImageHead(nn.Sequential):
    """Image features to an RGB image in [-1, 1]: `(B, C, H, W) -> (B, 3, H, W)`."""

    def __init__(self, channels: int):
        super().__init__(conv3x3(channels, 3), nn.Tanh())

    def logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The image before its tanh (what `config.image_skip` hands to the next level): `(B, C, H, W) -> (B, 3, H, W)`."""
        return self[0](hidden_states)


def to_pixels(hidden_states: torch.Tensor) -> torch.Tensor:
    """`(B, C, H, W) -> (B, N, C)`; a view, no copy, when the map is channels-last."""
    return hidden_states.flatten(2).transpose(1, 2)


def from_pixels(pixels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`(B, N, C) -> (B, C, H, W)` shaped like `like`; a contiguous `(B, N, C)` becomes a channels-last map."""
    return pixels.transpose(1, 2).unflatten(2, like.shape[-2:])


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor | None, dim: int) -> torch.Tensor:
    """
    Softmax over `dim` ignoring positions where `mask` is False; an all-masked row gives uniform weights, not NaN.
    bf16 / fp16 scores need no upcast: PyTorch's softmax kernels accumulate in fp32 and round only the result.
    """
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return scores.softmax(dim=dim)


# ---------------------------------------------------------------------------------------------------------------------
# Text fusion: how a level puts language into image features (patent [0077], [0096])


class AttentionFusion(nn.Module):
    """
    AttnGAN-style fusion: each image position attends over the text vectors (the word vectors at level 3, the sentence
    vector copied into one slot at level 2) and the attended context is stacked onto the image features.

    `(B, C, H, W), (B, L, D), (B, L) -> (B, 2C, H, W)`
    """

    def __init__(self, channels: int, text_dim: int):
        super().__init__()
        self.text_proj = nn.Linear(text_dim, channels, bias=False)  # AttnGAN's 1x1 conv from word space to image space
        self.scale = channels**-0.5

    def forward(self, hidden_states, text_embeds, text_mask=None):
        query = to_pixels(hidden_states)  # (B, N, C)
        keys = self.text_proj(text_embeds)  # (B, L, C)
        scores = torch.bmm(query, keys.transpose(1, 2)) * self.scale  # (B, N, L)
        mask = None if text_mask is None else text_mask[:, None, :]
        weights = masked_softmax(scores, mask, dim=-1)  # each position's attention over the L text slots
        context = torch.bmm(weights, keys)  # (B, N, C)
        return torch.cat([hidden_states, from_pixels(context, hidden_states)], dim=1)


class MemoryFusion(nn.Module):
    """
    DM-GAN dynamic memory: a memory-writing gate mixes each text slot with the image's global feature, key/value
    projections address the memory from every image position (masked softmax over slots), and a response gate decides
    how much of the memory read replaces the image feature. The gated features and the memory read are stacked.

    `(B, C, H, W), (B, L, D), (B, L) -> (B, 2C, H, W)`
    """

    def __init__(self, channels: int, text_dim: int):
        super().__init__()
        self.text_to_memory = nn.Linear(text_dim, channels)  # M_w
        self.image_to_memory = nn.Linear(channels, channels)  # M_r
        self.write_gate_text = nn.Linear(text_dim, 1)  # A
        self.write_gate_image = nn.Linear(channels, 1)  # B
        self.key = nn.Linear(channels, channels)  # phi_K
        self.value = nn.Linear(channels, channels)  # phi_V
        self.response_gate = nn.Linear(channels * 2, 1)  # W_r
        self.scale = channels**-0.5

    def forward(self, hidden_states, text_embeds, text_mask=None):
        pixels = to_pixels(hidden_states)  # (B, N, C)
        image_global = pixels.mean(dim=1)  # (B, C)

        # memory writing: g_i = sigmoid(A w_i + B r), m_i = M_w(w_i) g_i + M_r(r) (1 - g_i)
        write_gate = torch.sigmoid(self.write_gate_text(text_embeds) + self.write_gate_image(image_global)[:, None])
        memory = self.text_to_memory(text_embeds) * write_gate + self.image_to_memory(image_global)[:, None] * (
            1 - write_gate
        )  # (B, L, C)

        # key addressing and value reading
        keys, values = self.key(memory), self.value(memory)  # (B, L, C)
        scores = torch.bmm(pixels, keys.transpose(1, 2)) * self.scale  # (B, N, L)
        mask = None if text_mask is None else text_mask[:, None, :]
        weights = masked_softmax(scores, mask, dim=-1)
        response = torch.bmm(weights, values)  # (B, N, C)

        # response gate: h' = o g + h (1 - g)
        gate = torch.sigmoid(self.response_gate(torch.cat([response, pixels], dim=-1)))  # (B, N, 1)
        gated = response * gate + pixels * (1 - gate)
        return torch.cat([from_pixels(gated, hidden_states), from_pixels(response, hidden_states)], dim=1)


FUSIONS = {"attention": AttentionFusion, "memory": MemoryFusion}


# ---------------------------------------------------------------------------------------------------------------------
# The three generator levels


class UnconditionalLevel(nn.Module):
    """Level 1 (claim 2): noise -> linear reshape to `(8C, r1/8, r1/8)` -> three upsampling blocks -> x1. No text."""

    def __init__(self, config: StageGANConfig):
        super().__init__()
        channels = config.generator_channels * 8
        side = config.initial_resolution
        self.start_shape = (channels, side, side)
        self.project = nn.Linear(config.z_dim, channels * 2 * side * side, bias=False)
        self.project_norm = nn.BatchNorm2d(channels * 2)  # 2d so that a batch of one still trains
        mode = config.generator_upsampling
        self.upsample = nn.Sequential(
            UpBlock(channels, channels // 2, mode), UpBlock(channels // 2, channels // 4, mode),
            UpBlock(channels // 4, channels // 8, mode),
        )
        self.to_image = ImageHead(config.generator_channels)

    def forward(self, noise):
        channels, side, _ = self.start_shape
        hidden_states = self.project(noise).view(-1, 2 * channels, side, side)  # (B, 16C, s, s)
        # channels-last from here on: every conv and elementwise op downstream keeps it (no layout copies)
        hidden_states = hidden_states.contiguous(memory_format=torch.channels_last)
        hidden_states = glu(self.project_norm(hidden_states))  # (B, 8C, s, s)
        hidden_states = self.upsample(hidden_states)  # (B, C, r1, r1)
        return hidden_states, self.to_image.logits(hidden_states)


class RefinementLevel(nn.Module):
    """
    Levels 2 and 3 (claims 3, 4): fuse text into the previous level's image features, residual blocks, one
    upsampling -> an image of twice the side. Given the previous level's pre-tanh image (`config.image_skip`), the
    level's own image is a correction added to it, upsampled x2.
    """

    def __init__(self, config: StageGANConfig, num_residual_blocks: int):
        super().__init__()
        channels = config.generator_channels
        self.fusion = FUSIONS[config.fusion_type](channels, config.text_embed_dim)
        self.residual = nn.Sequential(*[ResBlock(channels * 2) for _ in range(num_residual_blocks)])
        self.upsample = UpBlock(channels * 2, channels, config.generator_upsampling)
        self.to_image = ImageHead(channels)

    def forward(self, hidden_states, text_embeds, text_mask=None, previous_logits=None):
        hidden_states = self.fusion(hidden_states, text_embeds, text_mask)  # (B, 2C, r, r)
        hidden_states = self.upsample(self.residual(hidden_states))  # (B, C, 2r, 2r)
        logits = self.to_image.logits(hidden_states)  # (B, 3, 2r, 2r)
        if previous_logits is not None:
            logits = logits + F.interpolate(previous_logits, scale_factor=2, mode="bilinear", align_corners=False)
        return hidden_states, logits


# ---------------------------------------------------------------------------------------------------------------------
# The three discriminators


def _maybe_spectral_norm(module: nn.Module, enabled: bool) -> nn.Module:
    return spectral_norm(module) if enabled else module


class ImageEncoder(nn.Sequential):
    """
    Strided 4x4 convolutions from `(B, 3, r, r)` down to `(B, C, 4, 4)`; widths follow the image size
    (`ndf * min(2**i, 8)` after the i-th). Returns the last map and, when asked, every map on the way.
    """

    def __init__(self, resolution: int, base_channels: int, use_spectral_norm: bool):
        layers, in_channels = [], 3
        num_downsamplings = int(math.log2(resolution // 4))
        for index in range(num_downsamplings):
            out_channels = base_channels * min(2**index, 8)
            conv = nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1)
            layers += [_maybe_spectral_norm(conv, use_spectral_norm), nn.LeakyReLU(0.2, inplace=True)]
            in_channels = out_channels
        super().__init__(*layers)
        self.out_channels = in_channels

    def forward(self, images, output_hidden_states=False):
        features, hidden_states = images, ()
        for index in range(0, len(self), 2):  # (conv, LeakyReLU) pairs
            features = self[index + 1](self[index](features))  # (B, Ci, H/2, W/2)
            if output_hidden_states:
                hidden_states += (features,)
        return features, hidden_states


class UnconditionalDiscriminator(nn.Module):
    """
    D1: real or fake, nothing else; it never sees text (patent [0064]). Returns logits `(B,)`, or with
    `output_hidden_states=True` `(logits, hidden_states)` (see [`StageGANDiscriminatorOutput`]), like `F.max_pool2d`'s
    `return_indices`: the training loop calls each level for its logits alone.
    """

    def __init__(self, config: StageGANConfig, resolution: int):
        super().__init__()
        sn = config.level_discriminator_spectral_norm(1)
        self.encoder = ImageEncoder(resolution, config.level_discriminator_channels(1), sn)
        self.to_logit = _maybe_spectral_norm(nn.Conv2d(self.encoder.out_channels, 1, kernel_size=4), sn)

    def forward(self, images, output_hidden_states=False):
        features, hidden_states = self.encoder(images, output_hidden_states)  # (B, C, 4, 4)
        logits = self.to_logit(features).flatten()  # (B,)
        return (logits, hidden_states) if output_hidden_states else logits


def unconditional_head(config: StageGANConfig, channels: int, kernel_size: int, sn: bool) -> nn.Module | None:
    """The logit convolution of D2 / D3 over the image features alone, if `config.unconditional_discriminator_weight`."""
    if config.unconditional_discriminator_weight <= 0:
        return None
    return _maybe_spectral_norm(nn.Conv2d(channels, 1, kernel_size=kernel_size), sn)


def with_unconditional(logits: torch.Tensor, head: nn.Module | None, image_features: torch.Tensor) -> torch.Tensor:
    """`(B,)` conditional logits, or `(B, 2)` (conditional, unconditional) for a level with an unconditional head."""
    if head is None:
        return logits
    return torch.stack([logits, head(image_features).flatten()], dim=1)


def split_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A level's `(B,)` or `(B, 2)` logits -> the conditional `(B,)` and the unconditional `(B,)` or None."""
    return (logits, None) if logits.ndim == 1 else (logits[:, 0], logits[:, 1])


class ConditionalDiscriminator(nn.Module):
    """
    D2 / D3: does the image match the condition vector (the sentence at level 2, the mean word at level 3)? Returns
    logits `(B,)`, or with `output_hidden_states=True` `(logits, hidden_states)`, as D1. With an unconditional head
    (`config.unconditional_discriminator_weight > 0`) the logits are `(B, 2)`: conditional, then unconditional, read
    from the image features before the condition joins (`split_logits`).
    """

    def __init__(self, config: StageGANConfig, resolution: int, level: int):
        super().__init__()
        sn = config.level_discriminator_spectral_norm(level)
        self.encoder = ImageEncoder(resolution, config.level_discriminator_channels(level), sn)
        channels = self.encoder.out_channels
        self.joint = nn.Sequential(
            _maybe_spectral_norm(conv3x3(channels + config.text_embed_dim, channels, bias=True), sn),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.to_logit = _maybe_spectral_norm(nn.Conv2d(channels, 1, kernel_size=4), sn)
        self.to_unconditional_logit = unconditional_head(config, channels, 4, sn)

    def forward(self, images, condition, output_hidden_states=False):
        features, hidden_states = self.encoder(images, output_hidden_states)  # (B, C, 4, 4)
        condition = condition[:, :, None, None].expand(-1, -1, *features.shape[2:])  # (B, D, 4, 4)
        joint = self.joint(torch.cat([features, condition], dim=1))  # (B, C, 4, 4)
        logits = with_unconditional(self.to_logit(joint).flatten(), self.to_unconditional_logit, features)
        return (logits, hidden_states + (joint,)) if output_hidden_states else logits


# at most this many of the frozen image tower's hidden states (evenly spaced, the last included) feed a "clip" level
MAX_BACKBONE_HIDDEN_STATES = 4


def backbone_hidden_state_indices(num_hidden_layers: int) -> list[int]:
    """Which of a CLIP image tower's `num_hidden_layers + 1` hidden states a `"clip"` discriminator reads."""
    count = num_hidden_layers + 1
    if count <= MAX_BACKBONE_HIDDEN_STATES:
        return list(range(count))
    step = (count - 1) / (MAX_BACKBONE_HIDDEN_STATES - 1)
    return [round(index * step) for index in range(MAX_BACKBONE_HIDDEN_STATES)]


class VisionBackboneDiscriminator(nn.Module):
    """
    A discriminator level that reads the frozen CLIP image tower its `StageGANDiscriminator` holds
    (`discriminator_backbone="clip"`; GALIP's CLIP-based discriminator, Projected GAN's pretrained feature network).

    The image (any size: resized as CLIP_FT sees it, `encoders.prepare_images`) goes through the tower; the patch
    tokens of some of its hidden states (`backbone_hidden_state_indices`), each layer-normalised without weights, are
    stacked into a `(B, L * hidden, g, g)` map on the patch grid, and only a small head learns: a 1x1 convolution
    to `2 * discriminator_channels`, strided 4x4 convolutions (doubling the width) down to at most 4x4, then, for D2 and
    D3, a 3x3 convolution over those features and the condition vector, as `ConditionalDiscriminator`, and a final
    convolution over the whole map to one logit (at D2 / D3 with an unconditional head, a second one over the map before
    the condition joins, as `ConditionalDiscriminator`). The head keeps PyTorch's default initialisation.

    The tower is not a submodule of the level (one tower serves every "clip" level, and no optimizer of a level sees
    it); gradients flow through it to the image only when the image requires them (the generator's update, a gradient
    penalty), so the discriminator's own update runs it without a graph.
    """

    def __init__(self, config: StageGANConfig, level: int, backbone: CLIPVisionModel):
        super().__init__()
        object.__setattr__(self, "_backbone", backbone)  # shared and frozen: not a submodule
        vision = backbone.config
        self.hidden_state_indices = backbone_hidden_state_indices(vision.num_hidden_layers)
        side = vision.image_size // vision.patch_size
        sn = config.level_discriminator_spectral_norm(level)
        channels = 2 * config.level_discriminator_channels(level)
        layers = [
            _maybe_spectral_norm(nn.Conv2d(len(self.hidden_state_indices) * vision.hidden_size, channels, 1), sn),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        while side > 4:
            layers += [_maybe_spectral_norm(nn.Conv2d(channels, 2 * channels, 4, 2, 1), sn), nn.LeakyReLU(0.2, inplace=True)]
            channels, side = 2 * channels, side // 2
        self.encoder = nn.Sequential(*layers)
        self.joint = None
        if level > 1:
            self.joint = nn.Sequential(
                _maybe_spectral_norm(conv3x3(channels + config.text_embed_dim, channels, bias=True), sn),
                nn.LeakyReLU(0.2, inplace=True),
            )
        self.to_logit = _maybe_spectral_norm(nn.Conv2d(channels, 1, kernel_size=side), sn)
        self.to_unconditional_logit = unconditional_head(config, channels, side, sn) if level > 1 else None
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module._keeps_default_init = True

    def backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        """`(B, 3, r, r)` in [-1, 1] -> the stacked, normalised patch tokens `(B, L * hidden, g, g)`."""
        backbone = self._backbone
        with torch.set_grad_enabled(torch.is_grad_enabled() and images.requires_grad):
            pixels = prepare_images(images, backbone.config.image_size)
            states = backbone(pixel_values=pixels, output_hidden_states=True).hidden_states
            tokens = torch.cat(
                [F.layer_norm(states[index][:, 1:], states[index].shape[-1:]) for index in self.hidden_state_indices],
                dim=-1,
            )  # (B, g*g, L*hidden): the class token left out
        side = int(math.isqrt(tokens.shape[1]))
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)

    def forward(self, images, condition=None, output_hidden_states=False):
        features, hidden_states = self.backbone_features(images), ()
        for index in range(0, len(self.encoder), 2):  # (conv, LeakyReLU) pairs, as `ImageEncoder`
            features = self.encoder[index + 1](self.encoder[index](features))
            hidden_states += (features,)
        image_features = features
        if self.joint is not None:
            condition = condition[:, :, None, None].expand(-1, -1, *features.shape[2:])
            features = self.joint(torch.cat([features, condition], dim=1))
            hidden_states += (features,)
        logits = with_unconditional(self.to_logit(features).flatten(), self.to_unconditional_logit, image_features)
        return (logits, hidden_states) if output_hidden_states else logits


def mean_word_embedding(word_embeds: torch.Tensor, word_mask: torch.Tensor | None) -> torch.Tensor:
    """The patent's c_w-hat ([0111]): mean of the word vectors over non-padding words. `(B, L, D) -> (B, D)`."""
    if word_mask is None:
        return word_embeds.mean(dim=1)
    weights = word_mask.to(word_embeds.dtype)[:, :, None]
    return (word_embeds * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


# ---------------------------------------------------------------------------------------------------------------------
# PreTrainedModel classes


class StageGANPreTrainedModel(PreTrainedModel):
    config_class = StageGANConfig
    base_model_prefix = "stagegan"
    main_input_name = "noise"

    def __init__(self, config: StageGANConfig, *inputs, **kwargs):
        # assignment validates each field; this also catches in-place edits (`config.stage_resolutions[2] = 48`)
        config.validate()
        super().__init__(config, *inputs, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike | None, *model_args, **kwargs):
        r"""
        `PreTrainedModel.from_pretrained`, refusing a checkpoint saved by the other StageGAN class. Generator and
        discriminator share `StageGANConfig`, so a discriminator folder would otherwise load as a randomly initialised
        generator (every saved weight "unexpected", every generator weight "missing"), and the reverse. The saved
        class is `architectures` in the checkpoint's `config.json`; `AutoModel.from_pretrained` returns that class.
        """
        if pretrained_model_name_or_path is not None:
            hub_kwargs = {key: value for key, value in kwargs.items() if key != "config"}
            try:
                config_dict, _ = cls.config_class.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)
            except OSError:  # no config.json (weights with a `config` passed): nothing says what was saved
                config_dict = {}
            stagegan_classes = {model.__name__: model for model in (StageGANGenerator, StageGANDiscriminator)}
            for name in config_dict.get("architectures") or []:
                saved_class = stagegan_classes.get(name)
                if saved_class is not None and not issubclass(cls, saved_class):
                    raise ValueError(
                        f"{str(pretrained_model_name_or_path)!r} holds a {name} (`architectures` in its config.json), "
                        f"not a {cls.__name__}: load it with `{name}.from_pretrained`, or with "
                        "`AutoModel.from_pretrained`, which returns the class that was saved."
                    )
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def _init_weights(self, module):
        # Each branch initialises only the tensors `module` itself owns: for a model outside transformers the loader
        # calls this only for modules with some tensor of their own missing from the checkpoint. A spectral-normed
        # layer owns its bias; its weight lives in a `ParametrizationList` (`original`) and spectral norm's
        # power-iteration vectors in the `_SpectralNorm` below that, which is visited first.
        std = self.config.initializer_range
        if isinstance(module, parametrize.ParametrizationList):
            init.normal_(module.original, mean=0.0, std=std)
            if not _is_loaded(module.original):  # a new weight: its spectral norm must be estimated anew
                for parametrization in module:
                    if isinstance(parametrization, _SpectralNorm):
                        _restart_power_iteration(parametrization, module.original)
        elif isinstance(module, _SpectralNorm):
            weight = self._spectral_normed_weight(module)
            vectors_loaded = _is_loaded(module._u) and _is_loaded(module._v)
            if _is_loaded(weight) and not vectors_loaded:  # a new weight is handled with its list above
                _restart_power_iteration(module, weight)
        elif getattr(module, "_keeps_default_init", False):  # a VisionBackboneDiscriminator head: nn.Conv2d's own
            if not parametrize.is_parametrized(module, "weight"):
                init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_channels * module.kernel_size[0] * module.kernel_size[1])
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            if not parametrize.is_parametrized(module, "weight"):
                init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)

    def _spectral_normed_weight(self, norm: nn.Module) -> torch.Tensor:
        """The weight that spectral norm `norm` divides: `original` of the parametrization list holding it."""
        for module in self.modules():
            if isinstance(module, parametrize.ParametrizationList) and any(p is norm for p in module):
                return module.original
        raise RuntimeError(f"{norm} is not a parametrization of any layer of this {type(self).__name__}.")


def _is_loaded(tensor: torch.Tensor) -> bool:
    """Whether the loader filled `tensor` from a checkpoint (transformers flags it so that no init overwrites it)."""
    return getattr(tensor, "_is_hf_initialized", False)


@torch.no_grad()
def _restart_power_iteration(norm: nn.Module, weight: torch.Tensor):
    """
    Spectral norm divides a weight by sigma = u^T W v, where u and v are power-iteration vectors kept as buffers
    (`_u`, `_v`). They must belong to the weight: left as the loader's or `to_empty`'s uninitialised memory they are
    zeros or garbage, so sigma is 0 or NaN and every logit NaN; after the weight is redrawn they estimate another
    matrix. Start again as torch's `spectral_norm` does for a new weight: random unit u and v, 15 power iterations.
    """
    for vector in (norm._u, norm._v):
        vector.copy_(F.normalize(vector.normal_(), dim=0, eps=norm.eps))
    norm._power_method(norm._reshape_weight_to_matrix(weight), 15)


def _check_text(name: str, tensor, batch: int, ndim: int, dim: int):
    if tensor is None:
        raise ValueError(f"`{name}` is required for this level, got None.")
    if tensor.ndim != ndim or tensor.shape[0] != batch or tensor.shape[-1] != dim:
        expected = "(batch, dim)" if ndim == 2 else "(batch, num_words, dim)"
        raise ValueError(
            f"`{name}` must have shape {expected} with batch={batch} and dim=text_embed_dim={dim}, "
            f"got {tuple(tensor.shape)}."
        )


class StageGANGenerator(StageGANPreTrainedModel):
    r"""
    The three-level StageGAN generator: noise -> x1 (level 1), + sentence -> x2 (level 2), + words -> x3 (level 3).

    With `config.stage_gradient == "isolated"` (default, claim 8) the features of x1 and x2 enter the next level
    detached, so each level's loss can only move that level's own parameters.

    Example:

    ```python
    >>> import torch
    >>> from hf_stagegan import StageGANConfig, StageGANGenerator

    >>> config = StageGANConfig(stage_resolutions=[16, 32, 64], generator_channels=8, text_embed_dim=32)
    >>> generator = StageGANGenerator(config).eval()
    >>> out = generator(noise=torch.randn(2, 100), sentence_embeds=torch.randn(2, 32), word_embeds=torch.randn(2, 5, 32))
    >>> [tuple(image.shape) for image in out.images]
    [(2, 3, 16, 16), (2, 3, 32, 32), (2, 3, 64, 64)]
    ```
    """

    def __init__(self, config: StageGANConfig):
        super().__init__(config)
        self.level1 = UnconditionalLevel(config)
        self.level2 = RefinementLevel(config, config.level2_residual_blocks)
        self.level3 = RefinementLevel(config, config.level3_residual_blocks)
        self.post_init()

    @property
    def levels(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        """The three sub-networks G1, G2, G3 (claim 8 updates each with its own loss)."""
        return (self.level1, self.level2, self.level3)

    def forward(
        self,
        noise: torch.Tensor,
        sentence_embeds: torch.Tensor | None = None,
        word_embeds: torch.Tensor | None = None,
        word_mask: torch.Tensor | None = None,
        num_levels: int = 3,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> StageGANGeneratorOutput | tuple:
        r"""
        Args:
            noise (`torch.FloatTensor` of shape `(batch, z_dim)`): the Gaussian noise z.
            sentence_embeds (`torch.FloatTensor` of shape `(batch, text_embed_dim)`): c_s, needed from level 2 on.
            word_embeds (`torch.FloatTensor` of shape `(batch, num_words, text_embed_dim)`): c_w, needed at level 3.
            word_mask (`torch.BoolTensor` of shape `(batch, num_words)`, *optional*): True at real words, False at
                padding and special tokens; all words count when omitted.
            num_levels (`int`, defaults to 3): stop after level 1, 2 or 3.
            output_hidden_states (`bool`, *optional*): also return each level's image features (see
                [`StageGANGeneratorOutput`]); defaults to `config.output_hidden_states`.
            return_dict (`bool`, *optional*): return a [`StageGANGeneratorOutput`] rather than a plain tuple of its
                non-`None` fields; defaults to `config.return_dict`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if num_levels not in (1, 2, 3):
            raise ValueError(f"`num_levels` must be 1, 2 or 3, got {num_levels!r}.")
        if noise.ndim != 2 or noise.shape[1] != self.config.z_dim:
            raise ValueError(f"`noise` must have shape (batch, z_dim={self.config.z_dim}), got {tuple(noise.shape)}.")
        batch, dim = noise.shape[0], self.config.text_embed_dim
        if num_levels >= 2:
            _check_text("sentence_embeds", sentence_embeds, batch, 2, dim)
        if num_levels == 3:
            _check_text("word_embeds", word_embeds, batch, 3, dim)
            if word_mask is not None and tuple(word_mask.shape) != tuple(word_embeds.shape[:2]):
                raise ValueError(
                    f"`word_mask` must have shape {tuple(word_embeds.shape[:2])} (batch, num_words), "
                    f"got {tuple(word_mask.shape)}."
                )
            word_mask = None if word_mask is None else word_mask.bool()

        isolated = self.config.stage_gradient == "isolated"

        def entering_next_level(tensor):  # claim 8: L_G2 must not move G1, L_G3 neither G1 nor G2
            return tensor.detach() if isolated else tensor

        def skip(logits):  # what the next level adds its image to, if anything
            return entering_next_level(logits) if self.config.image_skip else None

        hidden, logits = self.level1(noise)
        hidden_states, images = [hidden], [torch.tanh(logits)]
        if num_levels >= 2:
            # level 2 fuses the sentence copied into a single text slot (patent [0077])
            hidden, logits = self.level2(entering_next_level(hidden), sentence_embeds[:, None, :], None, skip(logits))
            hidden_states.append(hidden)
            images.append(torch.tanh(logits))
        if num_levels == 3:
            hidden, logits = self.level3(entering_next_level(hidden), word_embeds, word_mask, skip(logits))
            hidden_states.append(hidden)
            images.append(torch.tanh(logits))

        output = StageGANGeneratorOutput(
            images=tuple(images), hidden_states=tuple(hidden_states) if output_hidden_states else None
        )
        return output if return_dict else output.to_tuple()


class StageGANDiscriminator(StageGANPreTrainedModel):
    r"""
    The three StageGAN discriminators. `level1` (D1) sees only an image; `level2` (D2) an image and the sentence vector;
    `level3` (D3) an image and the mean of the word vectors over real words. Each returns logits, `(batch,)`. A level
    whose `config.level_discriminator_backbone(k)` is `"clip"` reads the image through `vision_backbone`, a frozen
    CLIP image tower shared by those levels (`VisionBackboneDiscriminator`; `load_vision_backbone` copies CLIP_FT's).

    Example:

    ```python
    >>> import torch
    >>> from hf_stagegan import StageGANConfig, StageGANDiscriminator

    >>> config = StageGANConfig(stage_resolutions=[16, 32, 64], discriminator_channels=8, text_embed_dim=32)
    >>> discriminator = StageGANDiscriminator(config)
    >>> discriminator(torch.randn(2, 3, 16, 16), level=1).logits.shape
    torch.Size([2])
    ```
    """

    main_input_name = "images"

    def __init__(self, config: StageGANConfig):
        super().__init__(config)
        first, second, third = config.stage_resolutions
        self.vision_backbone = None
        if config.uses_vision_backbone:
            if config.discriminator_vision_config is None:
                clip_levels = [level for level in (1, 2, 3) if config.level_discriminator_backbone(level) == "clip"]
                raise ValueError(
                    f"`discriminator_backbone` {config.discriminator_backbone!r} reads a CLIP image tower at D"
                    f"{clip_levels}, but `discriminator_vision_config` is None; give the CLIPVisionConfig of that "
                    "tower (as a dict, e.g. `clip_model.config.vision_config.to_dict()`)."
                )
            # one frozen tower for every "clip" level; its weights come from CLIP_FT (`load_vision_backbone`)
            self.vision_backbone = CLIPVisionModel._from_config(CLIPVisionConfig(**config.discriminator_vision_config))
            self.vision_backbone.requires_grad_(False).eval()

        on_tower = [config.level_discriminator_backbone(level) == "clip" for level in (1, 2, 3)]
        tower = self.vision_backbone
        self.level1 = VisionBackboneDiscriminator(config, 1, tower) if on_tower[0] else UnconditionalDiscriminator(config, first)
        self.level2 = VisionBackboneDiscriminator(config, 2, tower) if on_tower[1] else ConditionalDiscriminator(config, second, 2)
        self.level3 = VisionBackboneDiscriminator(config, 3, tower) if on_tower[2] else ConditionalDiscriminator(config, third, 3)
        self.post_init()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.vision_backbone is not None:
            self.vision_backbone.eval()  # frozen: always as CLIP_FT scores images
        return self

    @torch.no_grad()
    def load_vision_backbone(self, clip_model) -> None:
        """
        Copy the image tower of `clip_model` (a `CLIPModel`, e.g. CLIP_FT) into the frozen tower that the `"clip"`
        discriminator levels read. Its vision config must be `config.discriminator_vision_config`.
        """
        if self.vision_backbone is None:
            raise ValueError(
                f"This discriminator has no CLIP image tower: `discriminator_backbone` is "
                f"{self.config.discriminator_backbone!r}, none of its levels is 'clip'."
            )
        source = clip_model.vision_model
        shape_fields = ("hidden_size", "image_size", "patch_size", "num_hidden_layers")
        expected = {key: self.config.discriminator_vision_config.get(key) for key in shape_fields}
        given = {key: getattr(source.config, key, None) for key in expected}
        if given != expected:
            raise ValueError(
                f"`clip_model`'s image tower {given} does not match `discriminator_vision_config` {expected}."
            )
        self.vision_backbone.load_state_dict(source.state_dict())

    @property
    def levels(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        """The three sub-networks D1, D2, D3."""
        return (self.level1, self.level2, self.level3)

    def forward(
        self,
        images: torch.Tensor,
        level: int,
        sentence_embeds: torch.Tensor | None = None,
        word_embeds: torch.Tensor | None = None,
        word_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> StageGANDiscriminatorOutput | tuple:
        r"""
        Args:
            images (`torch.FloatTensor` of shape `(batch, 3, r, r)`): images in [-1, 1] at the level's resolution.
            level (`int`): 1, 2 or 3.
            sentence_embeds (`torch.FloatTensor` of shape `(batch, text_embed_dim)`): level 2 only.
            word_embeds (`torch.FloatTensor` of shape `(batch, num_words, text_embed_dim)`): level 3 only.
            word_mask (`torch.BoolTensor` of shape `(batch, num_words)`, *optional*): level 3; True at real words.
            output_hidden_states (`bool`, *optional*): also return the level's feature maps (see
                [`StageGANDiscriminatorOutput`]); defaults to `config.output_hidden_states`.
            return_dict (`bool`, *optional*): return a [`StageGANDiscriminatorOutput`] rather than a plain tuple of
                its non-`None` fields; defaults to `config.return_dict`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if level not in (1, 2, 3):
            raise ValueError(f"`level` must be 1, 2 or 3, got {level!r}.")
        side = self.config.stage_resolutions[level - 1]
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, side, side):
            raise ValueError(f"`images` for level {level} must have shape (batch, 3, {side}, {side}), got {tuple(images.shape)}.")
        given = {"sentence_embeds": sentence_embeds, "word_embeds": word_embeds, "word_mask": word_mask}
        allowed = {1: (), 2: ("sentence_embeds",), 3: ("word_embeds", "word_mask")}[level]
        unexpected = [name for name, value in given.items() if value is not None and name not in allowed]
        if unexpected:
            raise ValueError(f"D{level} does not take {unexpected}; it is conditioned on {list(allowed) or 'nothing'}.")

        batch, dim = images.shape[0], self.config.text_embed_dim
        if level == 1:
            outputs = self.level1(images, output_hidden_states=output_hidden_states)
        elif level == 2:
            _check_text("sentence_embeds", sentence_embeds, batch, 2, dim)
            outputs = self.level2(images, sentence_embeds, output_hidden_states=output_hidden_states)
        else:
            _check_text("word_embeds", word_embeds, batch, 3, dim)
            condition = mean_word_embedding(word_embeds, word_mask)
            outputs = self.level3(images, condition, output_hidden_states=output_hidden_states)
        logits, hidden_states = outputs if output_hidden_states else (outputs, None)
        logits, unconditional_logits = split_logits(logits)

        output = StageGANDiscriminatorOutput(
            logits=logits, unconditional_logits=unconditional_logits, hidden_states=hidden_states
        )
        return output if return_dict else output.to_tuple()


__all__ = [
    "StageGANDiscriminator",
    "StageGANDiscriminatorOutput",
    "StageGANGenerator",
    "StageGANGeneratorOutput",
    "StageGANPreTrainedModel",
    "mean_word_embedding",
]
