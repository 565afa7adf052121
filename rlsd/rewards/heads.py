"""The 5-linear MLP head shared by the LAION aesthetic predictor and ImageReward, with strict loading.

Layout (no activations, as in both originals; dropout is inactive at eval)::

    layers.0 Linear(D, 1024)  layers.1 Dropout(0.2)  layers.2 Linear(1024, 128)  layers.3 Dropout(0.2)
    layers.4 Linear(128, 64)  layers.5 Dropout(0.1)  layers.6 Linear(64, 16)     layers.7 Linear(16, 1)
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

__all__ = ["MLPHead", "load_strict"]


class MLPHead(nn.Module):
    """(N, D) -> (N, 1) head; ``widths`` default to the originals' (1024, 128, 64, 16)."""

    def __init__(self, input_dim: int = 768, widths: tuple[int, int, int, int] = (1024, 128, 64, 16)):
        super().__init__()
        w0, w1, w2, w3 = widths
        self.layers = nn.Sequential(
            nn.Linear(input_dim, w0), nn.Dropout(0.2), nn.Linear(w0, w1), nn.Dropout(0.2),
            nn.Linear(w1, w2), nn.Dropout(0.1), nn.Linear(w2, w3), nn.Linear(w3, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    @staticmethod
    def widths_from(state: Mapping[str, Tensor], prefix: str = "") -> tuple[int, tuple[int, int, int, int]]:
        """(input_dim, widths) read from a state dict in the layout above."""
        key = lambda i: f"{prefix}layers.{i}.weight"  # noqa: E731
        missing = [key(i) for i in (0, 2, 4, 6, 7) if key(i) not in state]
        if missing:
            raise ValueError(f"MLP head weights are missing {missing}; expected keys layers.{{0,2,4,6,7}}.weight/bias")
        return state[key(0)].shape[1], tuple(state[key(i)].shape[0] for i in (0, 2, 4, 6))


def load_strict(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """``module.load_state_dict(state)`` that names every missing/unexpected/mis-shaped key of ``source``."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        raise ValueError(f"{source}: missing keys {missing[:20]}{'...' if len(missing) > 20 else ''}, "
                         f"unexpected keys {unexpected[:20]}{'...' if len(unexpected) > 20 else ''}, "
                         f"shape mismatches {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in shapes[:10]]}")
    with torch.no_grad():
        module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
