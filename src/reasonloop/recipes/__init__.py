"""Layer 5: the self-improvement loops, each one readable file, each resumable."""

from reasonloop.recipes.demo import DEMO_DEFAULTS, demo_config, run_demo
from reasonloop.recipes.rft import RftConfig, run_rft
from reasonloop.recipes.star import StarConfig, run_star
from reasonloop.recipes.vstar import VStarConfig, run_vstar

__all__ = [
    "DEMO_DEFAULTS",
    "RftConfig",
    "StarConfig",
    "VStarConfig",
    "demo_config",
    "run_demo",
    "run_rft",
    "run_star",
    "run_vstar",
]
