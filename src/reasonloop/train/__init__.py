"""Layer 4: losses and advantage estimators as pure functions, batches (pairs, rollouts), one trainer and its loop."""

from reasonloop.train.data import Batch, encode_pairs, shuffled_batch
from reasonloop.train.loop import TrainConfig, Trainer, TrainingError, sft_on_pairs, train_loop
from reasonloop.train.losses import (
    advantage_weighted_loss,
    dpo_loss,
    sequence_logprobs,
    sft_loss,
    step_dpo_loss,
    token_logprobs,
)

__all__ = [
    "Batch",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "advantage_weighted_loss",
    "dpo_loss",
    "train_loop",
    "encode_pairs",
    "sequence_logprobs",
    "sft_loss",
    "sft_on_pairs",
    "shuffled_batch",
    "step_dpo_loss",
    "token_logprobs",
]
