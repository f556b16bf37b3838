import torch

from hf_stagegan.clip_finetuning import CLIPMatchingLoss, clip_finetuning_step, clip_matching_losses
from hf_stagegan.encoders import build_clip_from_scratch

from .test_training import toy_batch


def test_clip_from_scratch_learns_to_match_captions(tokenizer):
    torch.manual_seed(0)
    clip = build_clip_from_scratch(tokenizer, projection_dim=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    optimizer = torch.optim.Adam(clip.parameters(), lr=1e-3)
    held_out = toy_batch(tokenizer, seed=999)
    with torch.no_grad():
        before = {k: v.item() for k, v in clip_matching_losses(clip, held_out).items()}
    for step in range(30):
        logs = clip_finetuning_step(toy_batch(tokenizer, seed=step), CLIPMatchingLoss(clip), optimizer)
    with torch.no_grad():
        after = {k: v.item() for k, v in clip_matching_losses(clip, held_out).items()}
    assert set(logs) == {"clip_loss", "clip_sentence", "clip_word"}
    # 8 pairs, 2 captions: the best possible sentence CE is 2 * log(4) = 2.77 (4 identical positives per row)
    assert after["sentence"] < before["sentence"] - 0.5 and after["sentence"] < 3.2
    assert after["word"] < before["word"] - 0.3
