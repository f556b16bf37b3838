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


def gradient_penalty(
    real_logits: torch.Tensor, real_images: torch.Tensor, condition: torch.Tensor | None = None, power: float = 2.0
) -> torch.Tensor:
    """
    E[||grad D(x_t, c)||^power] over real pairs, the gradient taken with respect to the real image and, when given,
    its condition (both must require grad and have produced `real_logits`). With `power=2` and no condition it is R1
    (Mescheder et al., 2018; scale by gamma/2); with the condition and `power=6` it is DF-GAN's matching-aware
    gradient penalty (MA-GP), which smooths D around real, matching pairs. Not in the patent: a regulariser that
    `StageGANConfig.discriminator_gradient_penalty` switches on.
    """
    inputs = [real_images] if condition is None else [real_images, condition]
    grads = torch.autograd.grad(real_logits.sum(), inputs, create_graph=True)
    norms = torch.cat([grad.flatten(1) for grad in grads], dim=1).norm(dim=1)  # (B,)
    return norms.pow(power).mean()


def mismatched_text_loss(mismatched_logits: torch.Tensor) -> torch.Tensor:
    """
    -1/2 E[log(1 - Dk(x_t, c_mis))]: a real image with a caption that does not describe it is "fake" (the
    matching-aware discriminator of GAN-INT-CLS, kept in the authors' GR-GAN code for D2 and D3; not in the patent's
    formulas, so it is weighted by `StageGANConfig.mismatched_text_weight`, 0 by default).
    """
    return 0.5 * F.softplus(mismatched_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """L_Gk = -1/2 E[log Dk(x_k, cond)]  (claims 5, 6, 7): L_G1, L_G2 and L_G3 from their discriminator's logits."""
    (fake_logits,) = _upcast(fake_logits)
    return 0.5 * F.softplus(-fake_logits).mean()


def _symmetric_cross_entropy(
    logits: torch.Tensor, negative_logits: torch.Tensor | None = None, negative_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """
    Cross-entropy over the batch with the matching pair as the positive class, images->texts plus texts->images.

    `negative_logits` `(B, K)`: each image's score with K mismatched versions of its own caption, extra wrong classes
    of the image->text direction (`negative_mask` `(B, K)`: False where a slot holds no negative).
    """
    labels = torch.arange(logits.shape[0], device=logits.device)
    image_to_text = logits
    if negative_logits is not None:
        if negative_mask is not None:
            negative_logits = negative_logits.masked_fill(~negative_mask.bool(), float("-inf"))
        image_to_text = torch.cat([logits, negative_logits], dim=1)  # (B, B + K)
    return F.cross_entropy(image_to_text, labels) + F.cross_entropy(logits.t(), labels)


def sentence_image_loss(
    image_embeds: torch.Tensor,
    sentence_embeds: torch.Tensor,
    gamma3: float = 10.0,
    negative_sentence_embeds: torch.Tensor | None = None,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """
    Loss_CLIP_FT_s (claim 6): image-text consistency of global image features `(B, D)` and sentence vectors `(B, D)`.

    Cosine similarities scaled by gamma3 are the logits of a cross-entropy over the batch in which the matching pair
    is the positive class, in both directions (CLIP / DAMSM), summed. Optional hard negatives: the sentence vectors
    of K mismatched versions of each caption `(B, K, D)` (see `data.negatives`) join the wrong classes of each image.
    """
    image_embeds, sentence_embeds = _upcast(image_embeds, sentence_embeds)
    with _no_autocast(image_embeds):
        images = F.normalize(image_embeds, dim=-1)
        logits = gamma3 * images @ F.normalize(sentence_embeds, dim=-1).t()  # (B_img, B_txt)
        negative_logits = None
        if negative_sentence_embeds is not None:
            (negative_sentence_embeds,) = _upcast(negative_sentence_embeds)
            negatives = F.normalize(negative_sentence_embeds, dim=-1)
            negative_logits = gamma3 * torch.einsum("bd,bkd->bk", images, negatives)
        return _symmetric_cross_entropy(logits, negative_logits, negative_mask)


def word_region_similarity(
    region_embeds: torch.Tensor,
    word_embeds: torch.Tensor,
    word_mask: torch.Tensor | None = None,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
) -> torch.Tensor:
    """
    DAMSM image-text score R(Q, D) of every (image, text) pair: `(B_img, R, D)`, `(B_txt, L, D)` -> `(B_img, B_txt)`.
    With per-image texts `(B_img, K, L, D)` (and mask `(B_img, K, L)`), the score of image i with each of its own K
    texts: `(B_img, K)` (hard negatives).

    Each word attends over the image's regions (softmax of gamma1 * cosine), giving a region context c_l; the pair's
    score aggregates the words' relevances R(c_l, e_l) = cosine(c_l, e_l) as (1/gamma2) log sum_l exp(gamma2 R_l),
    over real words only (`word_mask` True). A text with no real word has no word-region evidence: its score is 0
    for every image, a constant that carries no gradient (`word_region_loss` leaves such texts out).
    """
    region_embeds, word_embeds = _upcast(region_embeds, word_embeds)
    with _no_autocast(region_embeds):
        regions = F.normalize(region_embeds, dim=-1)
        words = F.normalize(word_embeds, dim=-1)
        if words.ndim == 3:  # every image with every text
            similarity = torch.einsum("ird,tld->itlr", regions, words)  # (B_img, B_txt, L, R)
            words, word_mask = words[None], None if word_mask is None else word_mask[None]
        else:  # every image with its own texts
            similarity = torch.einsum("ird,ikld->iklr", regions, words)  # (B_img, K, L, R)
        attention = (gamma1 * similarity).softmax(dim=-1)
        context = torch.einsum("itlr,ird->itld", attention, regions)  # (B_img, T, L, D)
        relevance = gamma2 * F.cosine_similarity(context, words, dim=-1)  # (B_img, T, L)
        if word_mask is None:
            return torch.logsumexp(relevance, dim=-1) / gamma2
        word_mask = word_mask.bool()
        # masked words get the dtype's lowest value: exp() of it is exactly 0 next to any real word, and a text whose
        # words are all masked still has a finite log-sum-exp (and finite gradients), which is then replaced by 0
        relevance = relevance.masked_fill(~word_mask, torch.finfo(relevance.dtype).min)
        scores = torch.logsumexp(relevance, dim=-1) / gamma2  # (B_img, T)
        has_words = word_mask.any(dim=-1)  # (1, B_txt) or (B_img, K)
        return torch.where(has_words, scores, torch.zeros_like(scores))


def word_region_loss(
    region_embeds: torch.Tensor,
    word_embeds: torch.Tensor,
    word_mask: torch.Tensor | None = None,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
    negative_word_embeds: torch.Tensor | None = None,
    negative_word_mask: torch.Tensor | None = None,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """
    The word-region term of Loss_CLIP_FT (claim 7, step z3): cross-entropy over the batch of gamma3 * R(Q, D), the
    DAMSM score of `word_region_similarity`, in both directions, summed. Optional hard negatives: the word vectors of
    K mismatched versions of each caption `(B, K, L, D)`, their word mask `(B, K, L)` and which slots hold one
    `(B, K)`, as in `sentence_image_loss`.

    Pairs whose text has no real word (empty caption, or special tokens only) are left out, both as pairs and as
    negatives: words cannot be matched to regions where there are none. A batch with no word at all gives 0 (still
    attached to the graph, so every parameter gets a gradient, as DDP requires).
    """
    scores = gamma3 * word_region_similarity(region_embeds, word_embeds, word_mask, gamma1, gamma2)  # (B, B)
    negative_scores = None
    if negative_word_embeds is not None:
        negative_scores = gamma3 * word_region_similarity(
            region_embeds, negative_word_embeds, negative_word_mask, gamma1, gamma2
        )  # (B, K)
        if negative_word_mask is not None:
            has_words = negative_word_mask.bool().any(dim=-1)
            negative_mask = has_words if negative_mask is None else negative_mask.bool() & has_words
    if word_mask is None or bool(word_mask.bool().any(dim=-1).all()):
        return _symmetric_cross_entropy(scores, negative_scores, negative_mask)
    has_words = word_mask.bool().any(dim=-1)  # (B,)
    if not bool(has_words.any()):
        return scores.sum() * 0.0
    if negative_scores is not None:
        negative_scores = negative_scores[has_words]
        negative_mask = None if negative_mask is None else negative_mask[has_words]
    return _symmetric_cross_entropy(scores[has_words][:, has_words], negative_scores, negative_mask)


def clip_ft_loss(sentence_term: torch.Tensor, word_term: torch.Tensor, sentence_weight: float = 4.0, word_weight: float = 1.0):
    """Loss_CLIP_FT = 4 * sentence-image CE + 1 * word-region CE (claim 7, step z4; weights from [0109])."""
    return sentence_weight * sentence_term + word_weight * word_term


__all__ = [
    "clip_ft_loss",
    "discriminator_loss",
    "generator_loss",
    "gradient_penalty",
    "mismatched_text_loss",
    "sentence_image_loss",
    "word_region_loss",
    "word_region_similarity",
]
