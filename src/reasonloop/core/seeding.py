"""Global seeding and thread settings."""

from __future__ import annotations

import os
import random

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (if imported) so a run repeats exactly on the same machine."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    import torch

    torch.manual_seed(seed)


def set_threads(n: int | None = None) -> int:
    """Use `n` torch threads (default: all cores, or $REASONLOOP_THREADS). Returns the number set."""
    import torch

    if n is None:
        n = int(os.environ.get("REASONLOOP_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n
