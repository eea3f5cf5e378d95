"""Layer 5: the self-improvement loops, each one readable file, each resumable."""

from reasonloop.recipes.rft import RftConfig, run_rft
from reasonloop.recipes.star import StarConfig, run_star

__all__ = ["RftConfig", "StarConfig", "run_rft", "run_star"]
