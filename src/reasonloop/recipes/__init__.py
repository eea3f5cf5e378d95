"""Layer 5: the self-improvement loops, each one readable file, each resumable."""

from reasonloop.recipes.rft import RftConfig, run_rft
from reasonloop.recipes.star import StarConfig, run_star
from reasonloop.recipes.vstar import VStarConfig, run_vstar

__all__ = ["RftConfig", "StarConfig", "VStarConfig", "run_rft", "run_star", "run_vstar"]
