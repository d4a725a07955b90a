"""Validation: loss and top-1/top-5 error, single centre crop or the paper's ten crops (§4.1)."""

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.model import distributed
from alexnet.model.metrics import ten_crop_probs, topk_misses

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class EvalResult:
    loss: float  # mean cross-entropy (ten crops: −log of the averaged probability of the label)
    top1_err: float
    top5_err: float
    images: int


def autocast(device: torch.device, amp: bool) -> torch.autocast:
    """bf16 autocast on CUDA when amp is set; a disabled context elsewhere (CPU runs float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, ten_crop: bool = False, *, amp: bool = True) -> EvalResult:
    """Mean loss and top-1/top-5 error rates over `batches`, summed over all ranks when distributed.

    With ten_crop the images are [B, 10, 3, 224, 224] and the ten crops' softmax outputs are
    averaged. Labels and logits live on the device of the model's first parameter. The totals stay
    on the device and are read once at the end, so the host queues batch after batch; pass the bare
    model (not a DDP wrapper: its forward would broadcast buffers, and ranks may have different
    numbers of validation batches).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top-1 errors, top-5 errors, images
    for images, labels in batches:
        labels = labels.to(device)
        with autocast(device, amp):
            if ten_crop:
                if images.dim() != 5:
                    raise ValueError(f"ten-crop batches must be [B, crops, 3, H, W], got {tuple(images.shape)}")
                logits = model(images.flatten(0, 1)).view(images.shape[0], images.shape[1], -1)
                scores = ten_crop_probs(logits)
                loss = F.nll_loss(scores.clamp_min(1e-12).log(), labels, reduction="sum")
            else:
                scores = model(images).float()
                loss = F.cross_entropy(scores, labels, reduction="sum")
        totals[0] += loss.double()
        totals[1:3] += topk_misses(scores, labels)
        totals[3] += labels.numel()
    model.train(was_training)
    loss_sum, top1, top5, n = distributed.all_reduce_sum(totals).tolist()
    n = max(n, 1.0)
    return EvalResult(loss_sum / n, top1 / n, top5 / n, int(n))
