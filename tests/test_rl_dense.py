"""Dense process rewards in RL: rewards on step-end tokens, advantages by hand for every algorithm, frozen and
refreshed verifiers, the recipe end to end on a tiny model."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from reasonloop.core import Sample, load_config
from reasonloop.recipes.process_rewards import ProcessReward
from reasonloop.recipes.rl import RLConfig, RLRun, run_rl
from reasonloop.tasks import ArithTask
from reasonloop.train.rollout import RolloutBatch, step_char_ends, step_end_tokens
from reasonloop.verifiers import prm_examples, train_value_verifier
from reasonloop.verifiers.registry import write_manifest


def test_step_rewards_sit_on_the_last_token_of_each_step(char_tokenizer):
    text = "1+2=3\n3*4=12\nA: 12"
    ids = char_tokenizer(text + "\n", add_special_tokens=False)["input_ids"] + [char_tokenizer.eos_token_id]
    # the nano tokenizer is one token per character: steps end at characters 4, 11 and 17
    assert step_end_tokens(char_tokenizer, ids, step_char_ends(text, "\n")) == [4, 11, 17]

    class Scores:
        kind, delimiter = "prm", "\n"
        tokens_scored = 0

        def scores(self, prompts, solutions):
            return [[0.25, 0.5, 0.75] for _ in solutions]

    sample = Sample("p", text, steps=text.split("\n"), token_ids=ids, logprobs=[-1.0] * len(ids), prompt_ids=[5])
    rewards, where = ProcessReward.step_rewards(Scores(), char_tokenizer, [sample], ["Q"], len(ids))
    assert torch.nonzero(where[0]).flatten().tolist() == [4, 11, 17]
    assert rewards[0, [4, 11, 17]].tolist() == [0.25, 0.5, 0.75] and rewards.sum().item() == 1.5


def _batch_and_rewards():
    """Two completions of one prompt (G = 2), four tokens each; steps end at t = 1, 3 (row 0) and t = 2 (row 1)."""
    mask = torch.ones(2, 4)
    batch = RolloutBatch(
        torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5), torch.zeros(2, 5), mask, torch.zeros(2, 4)
    )
    outcome = torch.tensor([1.0, 0.0])
    step_r = torch.tensor([[0.0, 0.2, 0.0, 0.6], [0.0, 0.0, 0.4, 0.0]])
    step_m = torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    return batch, outcome, step_r, step_m


class _ZeroCritic:
    def __call__(self, batch, temperature=1.0):
        return None, torch.zeros_like(batch.mask)


def _advantages(algorithm: str, **reward):
    cfg = load_config(RLConfig, None, None, defaults={
        "algorithm": algorithm, "group_size": 2, "critic": {"gamma": 1.0, "lam": 1.0},
        "reward": {"process": "prm", "verifier": "x", "alpha": 0.5, **reward},
    })  # fmt: skip
    batch, outcome, step_r, step_m = _batch_and_rewards()
    RLRun.advantages(SimpleNamespace(cfg=cfg, module=_ZeroCritic()), batch, outcome, step_r, step_m)
    return batch


def test_dense_advantages_by_hand_for_every_algorithm():
    # step rewards 0.2, 0.6 | 0.4: group mean 0.4; centred -0.2, 0.2 | 0; unbiased std sqrt(0.08 / 2) = 0.2
    # group outcome (1, 0): GRPO (1 - 0.5) / (0.7071 + 1e-4) = 0.7070; Dr. GRPO 0.5; RLOO 1 - 0 = 1
    s = 0.2 / (0.2 + 1e-4)  # a centred step reward of 0.2 after the division by the std
    g = 0.5 / (0.5**0.5 + 1e-4)
    rtg_grpo = [[-s + s, -s + s, s, s], [0.0, 0.0, 0.0, 0.0]]  # sums of normalised rewards from t to the end
    want = [[g + 0.5 * r for r in rtg_grpo[0]], [-g + 0.5 * r for r in rtg_grpo[1]]]
    got = _advantages("grpo").advantages
    assert got.tolist() == [pytest.approx(w, abs=1e-5) for w in want]
    rtg = [[0.0, 0.0, 0.2, 0.2], [0.0, 0.0, 0.0, 0.0]]  # without the std: centred rewards
    assert _advantages("dr_grpo").advantages.tolist() == [
        pytest.approx([0.5 + 0.5 * r for r in rtg[0]]),
        pytest.approx([-0.5 + 0.5 * r for r in rtg[1]]),
    ]
    assert _advantages("rloo").advantages.tolist() == [
        pytest.approx([1.0 + 0.5 * r for r in rtg[0]]),
        pytest.approx([-1.0 + 0.5 * r for r in rtg[1]]),
    ]
    # REINFORCE++: token rewards r_t = outcome on the last token + 0.5 * step reward, returns-to-go, batch-normalised
    # tokens: row 0 (0, 0.1, 0, 1 + 0.3), row 1 (0, 0, 0.2, 0)
    ret = [[1.4, 1.4, 1.3, 1.3], [0.2, 0.2, 0.2, 0.0]]
    flat = [x for row in ret for x in row]
    mean = sum(flat) / 8
    std = (sum((x - mean) ** 2 for x in flat) / 7) ** 0.5
    got = _advantages("reinforce_pp").advantages
    assert got.tolist() == [pytest.approx([(x - mean) / (std + 1e-4) for x in row], abs=1e-5) for row in ret]
    # PPO: the same token rewards into GAE with a zero critic, gamma = lambda = 1: advantages are returns-to-go,
    # then whitened over the batch (population std), and the returns are the critic's targets
    batch = _advantages("ppo")
    pop = (sum((x - mean) ** 2 for x in flat) / 8) ** 0.5
    assert batch.returns.tolist() == [pytest.approx(r) for r in ret]
    assert batch.advantages.tolist() == [
        pytest.approx([(x - mean) / (pop + 1e-8) for x in row], abs=1e-5) for row in ret
    ]


def _value_dir(start: Path, out: Path, seed: int) -> Path:
    """A value head trained a few steps on made-up step labels of arith solutions."""
    task = ArithTask()
    problems = task.problems("train", 8, seed=seed)
    items = [(p, p.meta["solution"].split("\n")) for p in problems]
    values = [[0.5] + [1.0 / (1 + i) for i in range(len(steps))] for _, steps in items]
    from reasonloop.verifiers import ValueVerifierConfig

    return train_value_verifier(start, prm_examples(items, values), out, ValueVerifierConfig(epochs=1, batch_size=4))


@pytest.fixture(scope="module")
def verifier_dirs(tmp_path_factory, solver_tiny_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("verifiers")
    prm = _value_dir(solver_tiny_dir, root / "prm-train", 0)
    write_manifest(root / "prm", kind="value", model=prm.resolve(), aggregate="min")
    prover = _value_dir(solver_tiny_dir, root / "prover-train", 1)
    write_manifest(root / "pav", kind="pav", value=prm.resolve(), prover=prover.resolve(), alpha=1.0, aggregate="min")
    return {"prm": root / "prm", "pav": root / "pav", "prm_model": prm, "prover_model": prover}


def _digest(directory: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(directory.rglob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()


TINY = dict(n_train=8, n_eval=4, prompts_per_step=2, group_size=4, max_new_tokens=40, eval_every=0, lr=1e-3, steps=2)


@pytest.mark.parametrize("process", ["prm", "pav"])
def test_dense_rewards_run_with_a_frozen_verifier_that_is_never_updated(
    process, tmp_path, solver_tiny_dir, verifier_dirs
):
    before = {k: _digest(verifier_dirs[k]) for k in ("prm_model", "prover_model")}
    cfg = load_config(RLConfig, None, None, defaults={
        **TINY, "model": str(solver_tiny_dir), "reward": {"process": process, "verifier": str(verifier_dirs[process])},
    })  # fmt: skip
    res = run_rl(cfg, tmp_path / "run", log=lambda *_: None)
    steps = [r for r in res["records"] if r["step"] > 0]
    assert all(r["verifier_tokens"] > 0 for r in steps) and steps[-1]["tokens_verifier"] == sum(
        r["verifier_tokens"] for r in steps
    )
    assert all("step_reward_mean" in r for r in steps)
    assert {k: _digest(verifier_dirs[k]) for k in ("prm_model", "prover_model")} == before
    assert not list((tmp_path / "run" / "checkpoints").glob("verifier-step*"))
    assert "process rewards " + process in (tmp_path / "run" / "report.md").read_text()


def test_a_refreshed_verifier_is_refit_on_the_runs_rollouts_and_resumes(tmp_path, solver_tiny_dir, verifier_dirs):
    cfg = load_config(RLConfig, None, None, defaults={
        **TINY, "model": str(solver_tiny_dir), "reward": {
            "process": "pav", "verifier": str(verifier_dirs["pav"]), "refresh_every": 1, "refresh_samples": 4,
            "refresh_rollouts": 2,
        },
    })  # fmt: skip
    res = run_rl(cfg, tmp_path / "run", log=lambda *_: None)
    refits = sorted((tmp_path / "run" / "checkpoints").glob("verifier-step*"))
    assert [d.name for d in refits] == ["verifier-step1", "verifier-step2"]
    assert _digest(refits[-1] / "prover") != _digest(verifier_dirs["prover_model"])
    assert res["records"][-1]["tokens_refresh"] > 0
    rl = RLRun(cfg, solver_tiny_dir, tmp_path / "run" / "checkpoints" / "train")  # a resumed run uses the last refit
    assert rl.process.directory == refits[-1]


def test_process_reward_config_errors_are_one_line(tmp_path, capsys, verifier_dirs):
    from reasonloop.cli import main

    for override, message in [
        ("reward.process=orm", "process: unknown 'orm'"),
        ("reward.process=pav", "process rewards 'pav' need a verifier directory"),
    ]:
        assert main(["rl", "--run-dir", str(tmp_path / "r"), "--set", override]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    with pytest.raises(Exception, match="needs a PAV verifier, found a ValueVerifier"):
        ProcessReward("pav", verifier_dirs["prm"])
