"""Layer 5: the self-improvement loops, each one readable file, each resumable."""

from reasonloop.recipes.star import StarConfig, run_star

__all__ = ["StarConfig", "run_star"]
