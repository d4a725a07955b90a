"""Top-1/top-5 error counts and the paper's ten-crop softmax averaging (§4.1)."""

import torch


def topk_misses(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """How many rows of `scores` [B, C] (logits or probabilities) miss their label in their top k:
    one int64 count per k, left on the scores' device (reading it is the caller's choice).

    k is capped at C so a tiny test model still has a top-5.
    """
    kmax = min(max(ks), scores.shape[1])
    top = scores.topk(kmax, dim=1).indices
    hit = (top == labels.view(-1, 1)).cumsum(dim=1) > 0  # hit[:, j]: the label is among the top j + 1
    return (~hit[:, [min(k, kmax) - 1 for k in ks]]).sum(dim=0)


def topk_errors(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[int]:
    """`topk_misses` read back as Python ints."""
    return topk_misses(scores, labels, ks).tolist()


def ten_crop_probs(logits: torch.Tensor) -> torch.Tensor:
    """Average the softmax over crops: logits [B, 10, C] (or any crop count) → probabilities [B, C].

    The paper predicts from ten 224 patches (four corners and centre, and their mirrors) "by
    averaging the predictions made by the network's softmax layer on the ten patches".
    """
    if logits.dim() != 3:
        raise ValueError(f"ten-crop logits must be [batch, crops, classes], got {tuple(logits.shape)}")
    return logits.float().softmax(dim=-1).mean(dim=1)
