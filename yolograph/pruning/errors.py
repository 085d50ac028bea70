"""The errors the pruning library raises, in its own terms (a caller words them for its users).

All derive from `PassError`, so one that escapes a pass still prints as one clear line.
"""

from __future__ import annotations

from yolograph.errors import PassError


class PruningError(PassError):
    """A pruning step cannot be done on this model."""


class NothingPrunable(PruningError):
    """No channel group is a candidate under the selection rules."""

    def __init__(self) -> None:
        super().__init__("No channel group can lose channels under the selection rules (minimum width, exclusions).")


class TargetUnreachable(PruningError):
    """The selection rules stop short of the requested fraction of MACs or channels."""

    def __init__(self, target: str, amount: float, reached: float) -> None:
        self.target, self.amount, self.reached = target, amount, reached
        super().__init__(f"Removing {amount:.0%} of the {self.what} is out of reach: the selection rules allow "
                         f"at most {reached:.1%}.")

    @property
    def what(self) -> str:
        return "MACs" if self.target == "macs" else "prunable channels"


class NoBatchNorm(PruningError):
    """Importance by BatchNormalization scale on a model without BatchNormalization nodes."""

    def __init__(self) -> None:
        super().__init__("Ranking channels by BatchNormalization scale needs BatchNormalization nodes, but the model "
                         "has none (they were folded into the convs).")
