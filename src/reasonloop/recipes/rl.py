"""Online RL with verifiable rewards: GRPO, Dr. GRPO, RLOO, REINFORCE++ and PPO (actor-critic, GAE), resumable.

    reasonloop rl CONFIG.yaml --run-dir runs/rl        # or: run_rl(RLConfig(...), "runs/rl")

Each step, with the live policy (the engine samples from the very weights being
trained; nothing is reloaded from disk):

1. sample `group_size` completions for each of `prompts_per_step` training
   problems (token ids and logprobs kept);
2. grade them: the world's own check, or a grader file (`grader: FILE.yaml`);
   the reward sits on the last token of each completion;
3. advantages: group-normalised (GRPO), without the std (Dr. GRPO), leave-one-out
   (RLOO), batch-normalised returns (REINFORCE++), or GAE over the critic's
   values (PPO: delta_t = r_t + gamma V(t+1) - V(t));
4. `epochs` passes of mini-batch updates of the clipped policy loss against the
   sampler's logprobs (the old policy), plus KL to the starting policy (as a loss
   term, or folded into the rewards), an entropy bonus and, for PPO, the clipped
   value loss;
5. every `eval_every` steps, the held-out mean grade of greedy completions (the
   accuracy, for a 0/1 grader).

Reinforcement fine-tuning (OpenAI-style RFT) is this recipe with a preset:
`data` and `eval_data` name JSONL files of a few dozen examples (task `jsonl`),
`grader` a grader file, and the steps cover many passes over the examples, with
KL to the start kept and reported per pass (`examples/rft/extract.yaml`,
`docs/rl.md`).

`metrics.jsonl` gets one line per step with the diagnostics a practitioner
checks (reward, accuracy, groups with no signal, KL k1/k3, entropy, clip
fractions, approx KL old/new, grad norm, lengths and truncation, critic loss
and explained variance, tokens/s, peak memory); `report.md` and `plots/` come
at the end. Kill it at any moment and rerun the same command: it continues from
the last finished step with optimiser, schedule and RNG restored, and every
step appears exactly once in `metrics.jsonl`.

With `lora`, only adapters train and the reference is the base with the
adapters switched off (no second copy of the weights).
"""

from __future__ import annotations

import copy
import math
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reasonloop.core import (
    Grader,
    Problem,
    Sample,
    atomic_write_text,
    bounded,
    grade_sample,
)
from reasonloop.engine import HFEngine
from reasonloop.eval import greedy_accuracy, save_line_plot
from reasonloop.models import load_model, save_model
from reasonloop.recipes.common import BarFactory, metrics_through, no_bar, start_run
from reasonloop.recipes.process_rewards import ProcessReward
from reasonloop.tasks import WORLDS, parse_task_spec
from reasonloop.train import TrainConfig, Trainer, TrainingError, shuffled_batch
from reasonloop.train import advantages as adv
from reasonloop.train.actor_critic import ActorCritic
from reasonloop.train.lora import LoraSettings, add_lora, current_weights
from reasonloop.train.rl_losses import (
    AGGREGATES,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    kl_k1,
    kl_k3,
    kl_loss,
    token_mean,
)
from reasonloop.train.rollout import (
    RolloutBatch,
    completion_logits,
    completion_logprobs,
    disable_dropout,
    rollout_batch,
    token_logprobs_of,
)

ALGORITHMS = ("grpo", "dr_grpo", "rloo", "reinforce_pp", "ppo")
GROUP_BASELINES = {"grpo": adv.grpo_advantages, "dr_grpo": adv.dr_grpo_advantages, "rloo": adv.rloo_advantages}
PROCESS_REWARDS = ("none", "prm", "pav")


@dataclass(frozen=True)
class CriticConfig:
    """PPO's critic: a value head on the policy's backbone (`shared`) or on its own copy of the starting model."""

    shared: bool = False  # one backbone for policy and critic (one forward pass), or a separate critic backbone
    lr_scale: float = bounded(10.0, gt=0)  # the critic's learning rate as a multiple of the policy's
    coef: float = bounded(0.5, ge=0)  # weight of the value loss in the total loss
    clip: float = bounded(0.2, gt=0)  # value clipping range around the values at sampling time
    gamma: float = bounded(1.0, ge=0, le=1)  # discount
    lam: float = bounded(0.95, ge=0, le=1)  # GAE lambda


@dataclass(frozen=True)
class RewardConfig:
    """Dense process rewards from a trained verifier, on top of the grader's outcome reward (see `docs/rl.md`)."""

    process: str = "none"  # none; prm (the value after each step); pav (the prover's advantage of each step)
    verifier: str = ""  # the verifier's directory, from `reasonloop verifiers` (RUN/prm or RUN/pav)
    alpha: float = bounded(1.0, ge=0)  # weight of the step rewards against the outcome reward
    refresh_every: int = bounded(0, ge=0)  # 0: the verifier stays frozen; k: refit it every k steps
    refresh_samples: int = bounded(64, ge=1)  # completions of the refresh step that are Monte-Carlo labelled
    refresh_rollouts: int = bounded(4, ge=1)  # rollouts per step prefix for those labels
    prover_k: int = bounded(4, ge=1)  # a refreshed PAV's prover: best-of-k of the current policy

    def __post_init__(self) -> None:
        if self.process not in PROCESS_REWARDS:
            raise ValueError(f"process: unknown {self.process!r}; expected one of {', '.join(PROCESS_REWARDS)}")
        if self.process != "none" and not self.verifier:
            raise ValueError(f"verifier: process rewards '{self.process}' need a verifier directory")


@dataclass(frozen=True)
class RLConfig:
    """One online RL run."""

    model: str = "nano"  # the starting policy (a model directory, or "nano")
    task: str = "arith"  # a world, with options (countdown:n_numbers=3), or a file format with `data` (jsonl)
    data: str = ""  # a JSONL file of training examples (reinforcement fine-tuning; needs a file task)
    eval_data: str = ""  # a JSONL file of held-out examples, graded every `eval_every` steps (with `data`)
    grader: str = ""  # a grader YAML file for the rewards ("" = the world's own check)
    system_prompt: str = ""  # system prompt for a file task's problems (a line's `system` field wins)
    chat: bool = False  # prompt a file task through the model's chat template (instruct models)
    algorithm: str = "grpo"  # grpo, dr_grpo, rloo, reinforce_pp or ppo
    steps: int = bounded(100, ge=1)  # RL steps (sample, grade, learn)
    prompts_per_step: int = bounded(16, ge=1)  # training problems per step
    group_size: int = bounded(8, ge=1)  # completions per problem (GRPO's G)
    epochs: int = bounded(1, ge=1)  # passes over each rollout batch (mu)
    minibatch_size: int = bounded(0, ge=0)  # completions per optimiser step (0: the whole batch, one step per epoch)
    lr: float = bounded(3e-4, gt=0)  # policy learning rate
    warmup: int = bounded(0, ge=0)  # linear warm-up, in optimiser steps
    max_grad_norm: float = bounded(1.0, ge=0)  # gradient clipping
    eps_low: float = bounded(0.2, ge=0, lt=1)  # lower clip range of the ratio
    eps_high: float = bounded(0.2, ge=0)  # upper clip range (DAPO's clip-higher: 0.28)
    aggregate: str = "token_mean"  # per-token losses -> one number: token_mean, sequence_mean or constant (Dr. GRPO)
    kl_coef: float = bounded(0.0, ge=0)  # KL to the starting policy (0: no reference model is run)
    kl_in: str = "loss"  # "loss" (k3 term, GRPO) or "reward" (k1 penalty per token, PPO / REINFORCE++)
    entropy_coef: float = bounded(0.0, ge=0)  # entropy bonus
    skip_no_signal: bool = True  # leave rows whose advantages are all zero out of the update (same gradient)
    temperature: float = bounded(1.0, gt=0)  # sampling temperature (the policy trained is the tempered one)
    max_new_tokens: int = bounded(96, ge=1)  # generation budget per completion
    n_train: int = bounded(1000, ge=1)  # training problems (train split), cycled through in shuffled epochs
    n_eval: int = bounded(200, ge=1)  # held-out problems (test split, or the first of eval_data) to grade
    eval_every: int = bounded(10, ge=0)  # steps between held-out evaluations (and at the start and the end)
    save_every: int = bounded(1, ge=1)  # steps between checkpoints (a kill redoes at most this many steps)
    max_batch: int = bounded(256, ge=1)  # engine rows in flight
    sampler: str = ""  # "": the hf engine on the live policy; "vllm": in-process vLLM, given the weights each step
    seed: int = bounded(0, ge=0)  # problems, sampling and training derive from this
    lora: LoraSettings | None = None  # train LoRA adapters only (e.g. lora: {r: 16}); None: every weight
    critic: CriticConfig = field(default_factory=CriticConfig)  # PPO only
    reward: RewardConfig = field(default_factory=RewardConfig)  # dense step rewards from a verifier
    metrics_sinks: tuple[str, ...] = ()  # also send metrics.jsonl records to: "tensorboard", "wandb" (core.sinks)

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm: unknown {self.algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
        if self.algorithm in GROUP_BASELINES and self.group_size < 2:
            raise ValueError(
                f"group_size: {self.algorithm} needs at least 2 completions per problem "
                f"(with {self.group_size} every advantage is 0)"
            )
        if self.aggregate not in AGGREGATES:
            raise ValueError(f"aggregate: unknown {self.aggregate!r}; expected one of {', '.join(AGGREGATES)}")
        if self.sampler not in ("", "vllm"):
            raise ValueError(f"sampler: expected '' (in process) or 'vllm', got {self.sampler!r}")
        if self.kl_in not in ("loss", "reward"):
            raise ValueError(f"kl_in: expected 'loss' or 'reward', got {self.kl_in!r}")
        world = parse_task_spec(self.task)[0] in WORLDS
        if self.data and world:
            raise ValueError(f"data: task {self.task!r} is a built-in world; example files need a file task (jsonl)")
        if not world and not (self.data and self.eval_data):
            raise ValueError(f"data: task {self.task!r} reads example files; set both data and eval_data")

    @property
    def rows(self) -> int:
        """Completions per step."""
        return self.prompts_per_step * self.group_size

    @property
    def optimizer_steps(self) -> int:
        """Optimiser steps over the whole run (what the learning-rate schedule spans)."""
        per_epoch = math.ceil(self.rows / (self.minibatch_size or self.rows))
        return self.steps * self.epochs * per_epoch


def load_reward(cfg: RLConfig, task) -> Grader | None:
    """The grader the rewards come from: a grader file, or the task's own check (None without a task)."""
    if not cfg.grader:
        return task.grade if task is not None else None
    from reasonloop.graders import load_grader

    return load_grader(cfg.grader)


def rewards_of(grader: Grader, problems: list[Problem], groups: list[list[Sample]], delimiter: str) -> torch.Tensor:
    """Grade every sample in place; the rewards, problem-major, (N,). A grader failure stops with one line."""
    out = []
    for p, samples in zip(problems, groups):
        for j, s in enumerate(samples):
            try:
                grade_sample(grader, p, s, delimiter)
            except (ValueError, TypeError, ArithmeticError) as e:
                raise TrainingError(f"reward of sample {j} of problem {p.id!r} is not a number in [0, 1]: {e}") from e
            if s.reward is None or not math.isfinite(s.reward):
                raise TrainingError(f"reward of sample {j} of problem {p.id!r} is {s.reward!r}, not a finite number")
            out.append(s.reward)
    return torch.tensor(out)


class RLRun:
    """The models, optimiser and references of one run, set up once (resuming from the last checkpoint)."""

    def __init__(self, cfg: RLConfig, start: Path, ckpt_dir: Path, delimiter: str = "\n"):
        self.cfg = cfg
        policy, self.tokenizer = load_model(start)
        disable_dropout(policy)  # the trainer leaves the model in training mode; sampling must not be noisier
        if cfg.lora is not None:
            policy = add_lora(policy, cfg.lora)
        self.policy = policy
        self.reference = None
        if cfg.kl_coef > 0 and cfg.lora is None:
            self.reference = copy.deepcopy(policy).eval().requires_grad_(False)
        module, scales = policy, None
        if cfg.algorithm == "ppo":
            critic_backbone = None if cfg.critic.shared else load_model(start)[0]
            if critic_backbone is not None:
                disable_dropout(critic_backbone)
            module, scales = ActorCritic(policy, critic_backbone), {"critic.": cfg.critic.lr_scale}
        self.module = module
        train_cfg = TrainConfig(
            steps=cfg.optimizer_steps, lr=cfg.lr, warmup=cfg.warmup, min_lr_ratio=1.0,
            max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, max_bad_steps=3,
        )  # fmt: skip
        self.trainer = Trainer(module, self.tokenizer, train_cfg, out_dir=ckpt_dir, lr_scales=scales)
        if cfg.sampler == "vllm":  # colocated: its own copy of the weights, refreshed by `sampler()`
            from reasonloop.engine.vllm_engine import VLLMEngine

            self.engine = VLLMEngine(start, max_batch=cfg.max_batch)
        else:
            self.engine = HFEngine(policy, self.tokenizer, max_batch=cfg.max_batch, name=str(start))
        self.synced_at = -1 if cfg.sampler else None  # the optimiser step whose weights the sampler holds
        self.aggregate = AGGREGATES[cfg.aggregate](cfg.max_new_tokens)
        self.process = None  # dense step rewards: the latest refit of the verifier when resuming
        if cfg.reward.process != "none":
            directory = self.trainer.extra.get("verifier_dir", cfg.reward.verifier)
            self.process = ProcessReward(cfg.reward.process, directory, delimiter)
        self.last_rollout: tuple[list[Problem], list[Sample]] = ([], [])  # the last step's (problem, sample) pairs

    def sampler(self):
        """The engine rollouts and evaluations come from, on the policy's current weights: the hf engine reads the
        live weights; vLLM is given them (`current_weights`, LoRA folded in) whenever the policy moved."""
        if self.synced_at is not None and self.synced_at != self.trainer.step_count:
            self.engine.update_weights(current_weights(self.policy))
            self.synced_at = self.trainer.step_count
        return self.engine

    @property
    def done_steps(self) -> int:
        return int(self.trainer.extra.get("rl_step", 0))

    @torch.no_grad()
    def reference_logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """log pi_ref of the sampled tokens: the frozen copy, or the base with LoRA adapters disabled."""
        if self.reference is not None:
            return completion_logprobs(self.reference, batch, self.cfg.temperature)
        with self.policy.disable_adapter():
            return completion_logprobs(self.policy, batch, self.cfg.temperature)

    def loss(self, model, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Clipped policy loss (+ KL term, entropy bonus, value loss), for `Trainer.step`; a mini-batch without
        signal (`signal_rows` gave None) is a zero loss over the weights: zero gradients, the optimiser steps."""
        cfg = self.cfg
        if batch is None:
            return sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0, {}
        values = None
        if isinstance(model, ActorCritic):
            logits, values = model(batch, cfg.temperature)
        else:
            logits = completion_logits(model, batch, cfg.temperature)
        logprobs = token_logprobs_of(logits, batch)
        loss, metrics = clipped_policy_loss(
            logprobs, batch.old_logprobs, batch.advantages, batch.mask,
            eps_low=cfg.eps_low, eps_high=cfg.eps_high, aggregate=self.aggregate,
        )  # fmt: skip
        if batch.loss_scale != 1.0:  # rows without signal left out (`signal_rows`)
            loss = loss * batch.loss_scale
        if cfg.kl_coef > 0 and cfg.kl_in == "loss":  # KL is reported on the rollout (`advantages`), not here
            kl, _ = kl_loss(
                logprobs, batch.ref_logprobs, batch.mask, old_logprobs=batch.old_logprobs, aggregate=self.aggregate
            )
            loss = loss + cfg.kl_coef * kl
        with torch.set_grad_enabled(cfg.entropy_coef > 0):
            entropy = token_mean(entropy_from_logits(logits), batch.mask)
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * entropy
        metrics["entropy"] = entropy.item()
        if values is not None:
            v_loss, v_metrics = clipped_value_loss(
                values, batch.old_values, batch.returns, batch.mask, clip=cfg.critic.clip, aggregate=self.aggregate
            )
            loss = loss + cfg.critic.coef * v_loss
            metrics.update(v_metrics)
        return loss, metrics

    def advantages(
        self,
        batch: RolloutBatch,
        rewards: torch.Tensor,
        step_rewards: torch.Tensor | None = None,
        step_mask: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Fill `batch.advantages` (and the critic's targets for PPO) from the outcome `rewards` (N,) and, when
        given, dense step rewards (B, T) on the tokens `step_mask` marks:

            GRPO / Dr. GRPO / RLOO:  A_t = A_outcome + alpha * sum_{steps j ending at or after t} r~_j
                                     (r~: step rewards normalised over the group, `process_advantages`)
            REINFORCE++, PPO:        r_t = outcome on the last token + alpha * step reward on step-end tokens,
                                     into the return-to-go (REINFORCE++) or the TD errors (GAE)
        """
        cfg, mask = self.cfg, batch.mask
        last = mask.sum(dim=1).long() - 1  # (B,) index of each completion's last token
        token_rewards = torch.zeros_like(mask)
        token_rewards[torch.arange(len(batch)), last] = rewards
        info: dict[str, float] = {}
        if cfg.kl_coef > 0:
            k1, k3 = kl_k1(batch.old_logprobs, batch.ref_logprobs), kl_k3(batch.old_logprobs, batch.ref_logprobs)
            info = {"kl_k1": token_mean(k1, mask).item(), "kl_k3": token_mean(k3, mask).item()}
            if cfg.kl_in == "reward":
                token_rewards = token_rewards - cfg.kl_coef * k1 * mask
        dense = step_rewards is not None and step_mask is not None
        if cfg.algorithm in GROUP_BASELINES:
            seq = GROUP_BASELINES[cfg.algorithm](adv.sequence_rewards(token_rewards, mask), cfg.group_size)
            batch.advantages = adv.broadcast_to_tokens(seq, mask)
            if dense:
                steps = adv.process_advantages(step_rewards, step_mask, mask, cfg.group_size, cfg.algorithm == "grpo")
                batch.advantages = batch.advantages + cfg.reward.alpha * steps
            return info
        if dense:
            token_rewards = token_rewards + cfg.reward.alpha * step_rewards * mask
        if cfg.algorithm == "reinforce_pp":
            batch.advantages = adv.reinforce_pp_advantages(token_rewards, mask)
        else:
            with torch.no_grad():
                _, values = self.module(batch, cfg.temperature)
            batch.old_values = values * mask
            gae, batch.returns = adv.gae(token_rewards, batch.old_values, mask, cfg.critic.gamma, cfg.critic.lam)
            batch.advantages = adv.whiten(gae, mask)
        return info

    def update(self, batch: RolloutBatch, step: int) -> dict[str, float]:
        """`epochs` passes of mini-batch optimiser steps over `batch`, in a fresh random order each pass (whole
        groups at a time when the mini-batch holds whole groups); the mean of their metrics."""
        cfg = self.cfg
        size = cfg.minibatch_size or len(batch)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        records = []
        G = cfg.group_size
        for _ in range(cfg.epochs):
            if size % G == 0:  # whole groups per mini-batch, so each prompt is encoded once per mini-batch
                order = (torch.randperm(len(batch) // G, generator=gen)[:, None] * G + torch.arange(G)).reshape(-1)
            else:
                order = torch.randperm(len(batch), generator=gen)
            for i in range(0, len(batch), size):
                record = self.trainer.step([self.signal_rows(batch.select(order[i : i + size]))], self.loss)
                if record is not None:
                    records.append(record)
        keys = {k for r in records for k in r} - {"step", "elapsed_s"}
        return {k: sum(r[k] for r in records if k in r) / max(1, sum(k in r for r in records)) for k in keys}

    def signal_rows(self, batch: RolloutBatch) -> RolloutBatch | None:
        """The rows of a mini-batch that move the policy, with the loss scaled to what the whole mini-batch gives.

        A row whose advantages are all zero (a group whose samples were all right, or all wrong) contributes
        exactly zero to the clipped policy loss and its gradient, whatever the ratio, so when nothing else in the
        loss reads it (no KL term in the loss, no entropy bonus, no critic) it is left out of the forward and
        backward passes. The aggregates weigh rows alike within a batch, so the kept rows' loss times
        `agg(kept tokens, whole mask) / agg(ones, kept mask)` equals the whole mini-batch's (tested, with its
        gradient). None when no row carries signal: the optimiser still steps, on zero gradients, as it would.
        The step's metrics (clip fractions, entropy) are then over the kept rows.
        """
        cfg = self.cfg
        if not cfg.skip_no_signal or (cfg.kl_coef > 0 and cfg.kl_in == "loss") or cfg.entropy_coef > 0:
            return batch
        if isinstance(self.module, ActorCritic):
            return batch
        keep = (batch.advantages != 0).any(dim=1)
        if bool(keep.all()):
            return batch
        if not bool(keep.any()):
            return None
        sub = batch.select(torch.nonzero(keep).flatten())
        with torch.no_grad():
            whole = self.aggregate(keep[:, None].float().expand_as(batch.mask), batch.mask)
            sub.loss_scale = float(whole / self.aggregate(torch.ones_like(sub.mask), sub.mask))
        return sub

    def train_step(self, problems: list[Problem], grader: Grader, delimiter: str, step: int) -> dict[str, float]:
        """One RL step on `problems`: sample, grade, advantages, update. Its diagnostics (see the module docstring)."""
        cfg = self.cfg
        t0 = time.perf_counter()
        before = self.engine.counts.generated
        groups = self.sampler().generate(
            [p.prompt for p in problems], cfg.group_size, temperature=cfg.temperature,
            max_new_tokens=cfg.max_new_tokens, seed=cfg.seed * 1_000_003 + step,
        )  # fmt: skip
        generated = self.engine.counts.generated - before
        t_rollout = time.perf_counter() - t0
        rewards = rewards_of(grader, problems, groups, delimiter)
        samples = [s for g in groups for s in g]
        batch = rollout_batch(samples, self.tokenizer.pad_token_id or 0)
        t1 = time.perf_counter()
        if cfg.temperature != 1.0 or cfg.sampler:  # untempered, or another implementation's: the policy's own
            with torch.no_grad():
                batch.old_logprobs = completion_logprobs(self.policy, batch, cfg.temperature)
        if cfg.kl_coef > 0:
            batch.ref_logprobs = self.reference_logprobs(batch)
        step_rewards = step_mask = None
        verifier_tokens = 0
        if self.process is not None:
            before = self.process.tokens_scored
            prompts = [p.prompt for p in problems for _ in range(cfg.group_size)]
            step_rewards, step_mask = self.process.step_rewards(
                self.tokenizer, samples, prompts, batch.completion_length
            )
            verifier_tokens = self.process.tokens_scored - before
        info = self.advantages(batch, rewards, step_rewards, step_mask)
        self.last_rollout = ([p for p in problems for _ in range(cfg.group_size)], samples)
        t2 = time.perf_counter()
        updated = self.update(batch, step)
        t_update = time.perf_counter() - t2
        return {
            **_rollout_stats(samples, rewards, cfg),
            **info,
            **updated,
            "tokens_generated": generated,
            "verifier_tokens": verifier_tokens,
            **(
                {"step_reward_mean": (step_rewards * step_mask).sum().item() / max(1.0, step_mask.sum().item())}
                if step_rewards is not None
                else {}
            ),  # fmt: skip
            "rollout_s": t_rollout,
            "grade_s": t1 - t0 - t_rollout,
            "prep_s": t2 - t1,
            "update_s": t_update,
            "rollout_tokens_per_s": generated / max(t_rollout, 1e-9),
            "update_tokens_per_s": cfg.epochs * int(batch.mask.sum()) / max(t_update, 1e-9),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }


def run_rl(cfg: RLConfig, run_dir: str | Path, bar: BarFactory = no_bar, log=print) -> dict[str, Any]:
    """Run (or resume) online RL; returns the final held-out accuracy and the per-step records."""
    grader = load_reward(cfg, None)  # a grader file that does not load fails here, before anything
    if cfg.sampler == "vllm":  # and so does a sampler that is not installed
        from reasonloop.engine.vllm_engine import import_vllm

        import_vllm()
    setup = start_run(cfg, run_dir)
    grader = grader or setup.task.grade
    run, task = setup.run, setup.task
    rl = RLRun(cfg, setup.model, run.checkpoint("train"), task.step_delimiter)
    records = metrics_through(run.path / "metrics.jsonl", rl.done_steps)
    # compute so far: generator tokens sampled for training, verifier tokens read, refit rollouts; wall seconds
    totals = {k: rl.trainer.extra.get(k, 0) for k in ("tokens_sampled", "tokens_verifier", "tokens_refresh", "seconds")}

    def evaluate() -> float:
        return greedy_accuracy(rl.sampler(), grader, setup.test, cfg.max_new_tokens)

    if not records:
        acc0 = evaluate()
        records.append(_log(run, {"step": 0, "held_out_accuracy": acc0, "tokens_sampled": 0, "seconds": 0.0}))
    log(f"{cfg.algorithm}: step {rl.done_steps} of {cfg.steps}, held-out greedy {held_out_name(cfg)} "
        f"{100 * next(r['held_out_accuracy'] for r in reversed(records) if 'held_out_accuracy' in r):.1f}%")  # fmt: skip
    with bar(cfg.steps - rl.done_steps, f"{cfg.algorithm} on {cfg.task}") as advance:
        for step in range(rl.done_steps, cfg.steps):
            t0 = time.perf_counter()
            problems = [setup.train[i] for i in shuffled_batch(step, len(setup.train), cfg.prompts_per_step, cfg.seed)]
            record = rl.train_step(problems, grader, task.step_delimiter, step)
            totals["tokens_sampled"] += record["tokens_generated"]
            totals["tokens_verifier"] += record["verifier_tokens"]
            if rl.process is not None and cfg.reward.refresh_every and (step + 1) % cfg.reward.refresh_every == 0:
                before = rl.engine.counts.generated
                r = cfg.reward
                rl.process.refresh(
                    rl.sampler(), grader, *rl.last_rollout, run.checkpoint(f"verifier-step{step + 1}"),
                    n_samples=r.refresh_samples, rollouts=r.refresh_rollouts, prover_k=r.prover_k,
                    max_new_tokens=cfg.max_new_tokens, seed=cfg.seed * 1_000_003 + step + 500_000,
                )  # fmt: skip
                totals["tokens_refresh"] += rl.engine.counts.generated - before
            record = {"step": step + 1, **record, **{k: v for k, v in totals.items() if k != "seconds"}}
            if (cfg.eval_every and (step + 1) % cfg.eval_every == 0) or step + 1 == cfg.steps:
                record["held_out_accuracy"] = evaluate()
            totals["seconds"] += time.perf_counter() - t0
            record["seconds"] = totals["seconds"]  # wall time of the run so far, evaluations included
            records.append(_log(run, record))
            if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                state = {"rl_step": step + 1, **totals}
                if rl.process is not None:
                    state["verifier_dir"] = str(rl.process.directory)
                rl.trainer.save(state)
            acc = f" | held-out {100 * record['held_out_accuracy']:.1f}%" if "held_out_accuracy" in record else ""
            advance(status=f"reward {record['reward_mean']:.2f} | kl {record.get('kl_k3', 0.0):.3f}{acc}")
    final = run.checkpoint("final")
    if not (final / "config.json").exists():
        policy = rl.policy.merge_and_unload() if cfg.lora is not None else rl.policy
        save_model(policy, rl.tokenizer, final)
    write_report(run.path, cfg, records, n_train=len(setup.train))
    accs = [r["held_out_accuracy"] for r in records if "held_out_accuracy" in r]
    return {"start_accuracy": accs[0], "final_accuracy": accs[-1], "records": records, "model": final}


def _rollout_stats(samples: list[Sample], rewards: torch.Tensor, cfg: RLConfig) -> dict[str, float]:
    groups = rewards.view(-1, cfg.group_size)
    lengths = torch.tensor([len(s.token_ids) for s in samples], dtype=torch.float)
    return {
        "reward_mean": rewards.mean().item(),
        "reward_std": rewards.std().item() if len(rewards) > 1 else 0.0,
        "accuracy": (rewards == 1.0).float().mean().item(),
        "no_signal_groups": (groups == groups[:, :1]).all(dim=1).float().mean().item(),
        "length_mean": lengths.mean().item(),
        "truncated": sum(s.meta.get("finish_reason") == "length" for s in samples) / len(samples),
    }


def _log(run, record: dict[str, Any]) -> dict[str, Any]:
    run.log_metrics(**record)
    return record


def held_out_name(cfg: RLConfig) -> str:
    """What the held-out figure is: the accuracy under a world's 0/1 check, else the mean grade."""
    return "accuracy" if not cfg.grader and parse_task_spec(cfg.task)[0] in ("arith", "countdown") else "mean grade"


def per_pass(cfg: RLConfig, records: list[dict[str, Any]], n_train: int) -> list[dict[str, Any]]:
    """One row per pass over the `n_train` training problems (pass e holds the steps whose problems end within
    it): mean train reward, mean KL k3 to the start, and the held-out figure of the pass's last evaluation."""
    rows: dict[int, dict[str, Any]] = {}
    for r in records:
        if r["step"] == 0:
            continue
        e = math.ceil(r["step"] * cfg.prompts_per_step / n_train)
        row = rows.setdefault(e, {"pass": e, "steps": [], "reward": [], "kl": [], "held_out": None})
        row["steps"].append(r["step"])
        row["reward"].append(r["reward_mean"])
        if "kl_k3" in r:
            row["kl"].append(r["kl_k3"])
        if "held_out_accuracy" in r:
            row["held_out"] = r["held_out_accuracy"]
    return [
        {
            "pass": e,
            "first_step": min(v["steps"]),
            "last_step": max(v["steps"]),
            "reward": sum(v["reward"]) / len(v["reward"]),
            "kl_k3": sum(v["kl"]) / len(v["kl"]) if v["kl"] else None,
            "held_out": v["held_out"],
        }  # fmt: skip
        for e, v in sorted(rows.items())
    ]


def write_report(path: Path, cfg: RLConfig, records: list[dict[str, Any]], n_train: int | None = None) -> None:
    """report.md with the run's figures; plots of reward and the held-out figure against steps and sampled tokens,
    and of KL to the start against steps. A run of several passes over its training problems (reinforcement
    fine-tuning) also gets a table per pass with the KL to the start."""
    steps = [r for r in records if r["step"] > 0]
    evals = [r for r in records if "held_out_accuracy" in r]
    name = held_out_name(cfg)
    plots = path / "plots"
    if steps:
        xs = [r["step"] for r in steps]
        save_line_plot(plots / "reward.png", xs, {"reward (train samples)": [r["reward_mean"] for r in steps]},
                       xlabel="step", ylabel="mean reward", title=f"{cfg.algorithm} on {cfg.task}", xticks=False)  # fmt: skip
        if cfg.kl_coef > 0:
            save_line_plot(plots / "kl.png", xs, {"k1": [r["kl_k1"] for r in steps], "k3": [r["kl_k3"] for r in steps]},
                           xlabel="step", ylabel="KL to the start", title="KL(policy || start)", xticks=False)  # fmt: skip
    acc = {f"held-out greedy {name} (%)": [100 * r["held_out_accuracy"] for r in evals]}
    save_line_plot(plots / "accuracy_vs_steps.png", [r["step"] for r in evals], acc,
                   xlabel="step", ylabel=f"{name} (%)", title=f"{cfg.algorithm} on {cfg.task}", xticks=False)  # fmt: skip
    dense = cfg.reward.process != "none"
    tokens = [r["tokens_sampled"] + r.get("tokens_verifier", 0) + r.get("tokens_refresh", 0) for r in evals]
    save_line_plot(plots / "accuracy_vs_tokens.png", tokens, acc,
                   xlabel="tokens (generator + verifier)" if dense else "tokens sampled", ylabel=f"{name} (%)",
                   title=f"{cfg.algorithm} on {cfg.task}", xticks=False)  # fmt: skip
    last = steps[-1] if steps else {}
    lines = [
        f"# {cfg.algorithm} on `{cfg.task}`"
        + (f" (examples `{cfg.data}`, held out `{cfg.eval_data}`)" if cfg.data else ""),
        "",
        f"Start `{cfg.model}`; {cfg.steps} steps of {cfg.prompts_per_step} problems x {cfg.group_size} samples; "
        f"{cfg.epochs} epoch(s), mini-batch {cfg.minibatch_size or cfg.rows}; lr {cfg.lr}; KL coefficient "
        f"{cfg.kl_coef} (in the {cfg.kl_in}); loss aggregation {cfg.aggregate}; "
        f"{'LoRA r=' + str(cfg.lora.r) if cfg.lora else 'full fine-tuning'}; process rewards {cfg.reward.process}"
        + (
            f" (alpha {cfg.reward.alpha}, verifier `{cfg.reward.verifier}`, "
            f"{'frozen' if not cfg.reward.refresh_every else f'refit every {cfg.reward.refresh_every} steps'})"
            if dense
            else ""
        )
        + ".",
        "",
        f"| step | tokens sampled | verifier tokens | held-out greedy {name} |",
        "|---|---|---|---|",
        *(
            f"| {r['step']} | {r['tokens_sampled']:,} | {r.get('tokens_verifier', 0):,} | {100 * r['held_out_accuracy']:.1f}% |"
            for r in evals
        ),  # fmt: skip
        "",
        f"Last step: reward {last.get('reward_mean', float('nan')):.3f}, entropy {last.get('entropy', float('nan')):.3f}, "
        f"{last.get('rollout_tokens_per_s', 0):.0f} rollout tokens/s, {last.get('update_tokens_per_s', 0):.0f} update "
        f"tokens/s, peak RSS {last.get('peak_rss_mib', 0):.0f} MiB; wall time {last.get('seconds', 0):.0f} s.",
        "",
        "![accuracy vs steps](plots/accuracy_vs_steps.png) ![accuracy vs tokens](plots/accuracy_vs_tokens.png)",
        "![reward](plots/reward.png)" + (" ![kl](plots/kl.png)" if cfg.kl_coef > 0 else ""),
        "",
    ]
    passes = per_pass(cfg, records, n_train) if n_train else []
    if len(passes) >= 2:
        lines += [
            f"Per pass over the {n_train} training problems (KL k3 to the start, mean over the pass's steps"
            + ("" if cfg.kl_coef > 0 else "; not measured: kl_coef is 0, so no reference model runs")
            + "):",
            "",
            f"| pass | steps | train reward | KL to start | held-out {name} |",
            "|---|---|---|---|---|",
            *(
                f"| {p['pass']} | {p['first_step']}-{p['last_step']} | {p['reward']:.3f} | "
                + ("-" if p["kl_k3"] is None else f"{p['kl_k3']:.4f}")
                + " | "
                + ("-" if p["held_out"] is None else f"{100 * p['held_out']:.1f}%")
                + " |"
                for p in passes
            ),
            "",
        ]
    atomic_write_text(path / "report.md", "\n".join(lines))
