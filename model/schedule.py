"""The learning rate per epoch: §5's divide-by-10-on-plateau, or division at fixed epochs."""

import math
from collections.abc import Mapping, Sequence
from typing import Any

from alexnet.model.paper import LEARNING_RATE, LR_DROP_FACTOR, MAX_LR_DROPS

# Epochs in a row without a new best validation error before the lr is divided. The paper says only
# "when the validation error rate stopped improving with the current learning rate" (§5).
PLATEAU_PATIENCE = 2


class LrSchedule:
    """mode "plateau": after `patience` epochs in a row without a new best validation top-1 error,
    divide by `factor` (at most `max_drops` times; the paper did so three times). mode "step":
    divide at the start of each epoch listed in `step_epochs` (0-based)."""

    def __init__(
        self,
        mode: str = "plateau",
        lr: float = LEARNING_RATE,
        factor: float = LR_DROP_FACTOR,
        patience: int = PLATEAU_PATIENCE,
        max_drops: int = MAX_LR_DROPS,
        step_epochs: Sequence[int] = (),
    ) -> None:
        if mode not in ("plateau", "step"):
            raise ValueError(f"lr schedule must be 'plateau' or 'step', not {mode!r}")
        self.mode, self.base_lr, self.factor = mode, lr, factor
        self.patience, self.max_drops, self.step_epochs = patience, max_drops, tuple(step_epochs)
        self.drops = 0
        self.best = math.inf
        self.bad_epochs = 0

    def lr(self, epoch: int) -> float:
        """The learning rate for `epoch`."""
        drops = sum(epoch >= e for e in self.step_epochs) if self.mode == "step" else self.drops
        return self.base_lr / self.factor**drops

    def end_epoch(self, val_top1_err: float) -> None:
        """Record an epoch's validation error (moves only a plateau schedule)."""
        if self.mode != "plateau":
            return
        if val_top1_err < self.best:
            self.best, self.bad_epochs = val_top1_err, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience and self.drops < self.max_drops:
            self.drops, self.bad_epochs = self.drops + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"drops": self.drops, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.drops, self.best, self.bad_epochs = state["drops"], state["best"], state["bad_epochs"]
