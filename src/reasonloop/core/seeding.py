"""Global seeding, seeds derived from names, and thread settings."""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (if imported) so a run repeats exactly on the same machine."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    import torch

    torch.manual_seed(seed)


def derive_seed(*parts: int | str) -> int:
    """A seed in [0, 2**63) that depends only on `parts`, the same in every process and on every machine
    (Python's `hash` is salted per process). Sampling derives one seed per (problem, sample index) this way, so
    what a row draws does not depend on which other rows share its batch.

    >>> derive_seed(0, "arith-train-17") == derive_seed(0, "arith-train-17") != derive_seed(1, "arith-train-17")
    True
    >>> derive_seed(1, 23) != derive_seed(12, 3)  # parts are kept apart, not concatenated
    True
    """
    text = "\x1f".join(f"{type(p).__name__}:{p}" for p in parts)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


def set_threads(n: int | None = None) -> int:
    """Use `n` torch threads (default: all cores, or $REASONLOOP_THREADS). Returns the number set."""
    import torch

    if n is None:
        n = int(os.environ.get("REASONLOOP_THREADS", "0")) or (os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n
