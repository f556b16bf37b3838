"""The patent's losses (CN113781598B, claims 5-7) as pure functions of logits and features.

D(.) in the patent is a probability, D = sigmoid(logit). Every log-probability is written with softplus,
    -log sigmoid(l) = softplus(-l),    -log(1 - sigmoid(l)) = softplus(l),
which is exact and stays finite for any finite logit (never `log(sigmoid(.))`).

Every loss is computed in at least fp32, also under bf16 / fp16 autocast (mixed-precision training): its inputs are
upcast and autocast is paused inside, because the softmaxes, log-sum-exps and batch means would round in 16 bits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _no_autocast(tensor: torch.Tensor):
    """Pauses autocast (which would run the similarity matmuls in bf16 / fp16) on `tensor`'s device type."""
    return torch.autocast(tensor.device.type, enabled=False)


def _upcast(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """At least fp32 versions of `tensors` (float64 stays float64)."""
    return [tensor.to(torch.promote_types(tensor.dtype, torch.float32)) for tensor in tensors]


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """
    L_Dk = -1/2 E_real[log Dk(x_t, cond)] - 1/2 E_fake[log(1 - Dk(x_k, cond))]  (claims 5, 6, 7).

    The same formula is L_D1 (no condition), L_D2 (cond = c_s) and L_D3 (cond = mean word vector); the condition is
    already inside the logits, which the level's discriminator computed.
    """
    real_logits, fake_logits = _upcast(real_logits, fake_logits)
    return 0.5 * F.softplus(-real_logits).mean() + 0.5 * F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """L_Gk = -1/2 E[log Dk(x_k, cond)]  (claims 5, 6, 7): L_G1, L_G2 and L_G3 from their discriminator's logits."""
    (fake_logits,) = _upcast(fake_logits)
    return 0.5 * F.softplus(-fake_logits).mean()


def _symmetric_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the batch with the matching pair as the positive class, images->texts plus texts->images."""
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)


def sentence_image_loss(image_embeds: torch.Tensor, sentence_embeds: torch.Tensor, gamma3: float = 10.0) -> torch.Tensor:
    """
    Loss_CLIP_FT_s (claim 6): image-text consistency of global image features `(B, D)` and sentence vectors `(B, D)`.

    Cosine similarities scaled by gamma3 are the logits of a cross-entropy over the batch in which the matching pair
    is the positive class, in both directions (CLIP / DAMSM), summed.
    """
    image_embeds, sentence_embeds = _upcast(image_embeds, sentence_embeds)
    with _no_autocast(image_embeds):
        logits = gamma3 * F.normalize(image_embeds, dim=-1) @ F.normalize(sentence_embeds, dim=-1).t()  # (B_img, B_txt)
        return _symmetric_cross_entropy(logits)


def word_region_similarity(
    region_embeds: torch.Tensor,
    word_embeds: torch.Tensor,
    word_mask: torch.Tensor | None = None,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
) -> torch.Tensor:
    """
    DAMSM image-text score R(Q, D) of every (image, text) pair: `(B_img, R, D)`, `(B_txt, L, D)` -> `(B_img, B_txt)`.

    Each word attends over the image's regions (softmax of gamma1 * cosine), giving a region context c_l; the pair's
    score aggregates the words' relevances R(c_l, e_l) = cosine(c_l, e_l) as (1/gamma2) log sum_l exp(gamma2 R_l),
    over real words only.
    """
    region_embeds, word_embeds = _upcast(region_embeds, word_embeds)
    with _no_autocast(region_embeds):
        regions = F.normalize(region_embeds, dim=-1)
        words = F.normalize(word_embeds, dim=-1)
        similarity = torch.einsum("ird,tld->itlr", regions, words)  # (B_img, B_txt, L, R)
        attention = (gamma1 * similarity).softmax(dim=-1)
        context = torch.einsum("itlr,ird->itld", attention, regions)  # (B_img, B_txt, L, D)
        relevance = F.cosine_similarity(context, words[None], dim=-1)  # (B_img, B_txt, L)
        if word_mask is not None:
            # cosines lie in [-1, 1]: -1e4 removes a word from the sum, yet a text with no word stays finite (no NaN)
            relevance = relevance.masked_fill(~word_mask.bool()[None], -1e4)
        return torch.logsumexp(gamma2 * relevance, dim=-1) / gamma2


def word_region_loss(
    region_embeds: torch.Tensor,
    word_embeds: torch.Tensor,
    word_mask: torch.Tensor | None = None,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
) -> torch.Tensor:
    """
    The word-region term of Loss_CLIP_FT (claim 7, step z3): cross-entropy over the batch of gamma3 * R(Q, D), the
    DAMSM score of `word_region_similarity`, in both directions, summed.
    """
    return _symmetric_cross_entropy(gamma3 * word_region_similarity(region_embeds, word_embeds, word_mask, gamma1, gamma2))


def clip_ft_loss(sentence_term: torch.Tensor, word_term: torch.Tensor, sentence_weight: float = 4.0, word_weight: float = 1.0):
    """Loss_CLIP_FT = 4 * sentence-image CE + 1 * word-region CE (claim 7, step z4; weights from [0109])."""
    return sentence_weight * sentence_term + word_weight * word_term


__all__ = [
    "clip_ft_loss",
    "discriminator_loss",
    "generator_loss",
    "sentence_image_loss",
    "word_region_loss",
    "word_region_similarity",
]
