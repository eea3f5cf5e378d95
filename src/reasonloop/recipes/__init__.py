"""Layer 5: the self-improvement loops, each one readable file, each resumable."""

from reasonloop.recipes.demo import DEMO_DEFAULTS, demo_config, run_demo
from reasonloop.recipes.nano import NanoConfig, train_nano
from reasonloop.recipes.quiet_star import QuietStarConfig, run_quiet_star
from reasonloop.recipes.rft import RftConfig, run_rft
from reasonloop.recipes.rl import RLConfig, run_rl
from reasonloop.recipes.scale import ScaleConfig, SearchConfig, run_scale
from reasonloop.recipes.selfplay import SelfPlayConfig, run_selfplay
from reasonloop.recipes.star import StarConfig, run_star
from reasonloop.recipes.step_dpo import StepDpoConfig, StepDpoUpdateConfig, run_step_dpo, step_dpo_update
from reasonloop.recipes.verifiers import VerifiersConfig, run_verifiers
from reasonloop.recipes.vstar import VStarConfig, run_vstar

__all__ = [
    "DEMO_DEFAULTS",
    "NanoConfig",
    "QuietStarConfig",
    "RLConfig",
    "RftConfig",
    "ScaleConfig",
    "SelfPlayConfig",
    "SearchConfig",
    "VerifiersConfig",
    "StarConfig",
    "StepDpoConfig",
    "StepDpoUpdateConfig",
    "VStarConfig",
    "demo_config",
    "run_demo",
    "run_quiet_star",
    "run_rft",
    "run_rl",
    "run_scale",
    "run_selfplay",
    "run_verifiers",
    "run_star",
    "run_step_dpo",
    "step_dpo_update",
    "run_vstar",
    "train_nano",
]
