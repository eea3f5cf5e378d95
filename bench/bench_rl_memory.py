"""Peak memory of RL steps: full fine-tuning against LoRA, each with and without the KL reference.

    python bench/bench_rl_memory.py                  # a 27M-parameter Llama, 3 RL steps per run

Each run is a fresh process (peak RSS is per process): load the model, run 3
GRPO steps of 8 prompts x 8 samples x 32 tokens. With full fine-tuning a KL
coefficient above 0 holds a frozen copy of the weights as the reference; with
LoRA the reference is the same weights with the adapters switched off, so the
KL should cost no second copy. Prints a table and writes
`bench/results/rl_memory.json`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import resource, sys, tempfile
from pathlib import Path
import torch
torch.set_num_threads(2)
from reasonloop.core import load_config
from reasonloop.recipes.rl import RLConfig, RLRun
from reasonloop.tasks import ArithTask
model, lora, kl = sys.argv[1], sys.argv[2] == "lora", float(sys.argv[3])
sets = [f"model={model}", "prompts_per_step=8", "group_size=8", "max_new_tokens=32", f"kl_coef={kl}", "lr=1e-5"]
if lora:
    sets.append("lora.r=16")
cfg = load_config(RLConfig, None, sets)
task = ArithTask()
rl = RLRun(cfg, Path(model), Path(tempfile.mkdtemp()))
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
problems = task.problems("train", 8, seed=1)
for step in range(3):
    rl.train_step(problems, task.grade, task.step_delimiter, step)
print(loaded, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def model_dir(root: Path) -> tuple[Path, int]:
    """The 8-layer, width-512 Llama this bench measures, and its parameter count."""
    from bench_rl_step import tiny_model_dir

    from reasonloop.models import load_model

    path = tiny_model_dir(root, hidden=512, layers=8, mlp=1408, heads=8)
    return path, sum(p.numel() for p in load_model(path)[0].parameters())


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory() as root:
        path, n_params = model_dir(Path(root))
        for mode in ("full", "lora"):
            for kl in (0.0, 0.05):
                out = subprocess.run([sys.executable, "-c", CHILD, str(path), mode, str(kl)], capture_output=True,
                                     text=True, check=True).stdout.split()  # fmt: skip
                rows.append({"mode": mode, "kl_coef": kl, "loaded_mib": float(out[-2]), "peak_mib": float(out[-1])})
    weights_mib = n_params * 4 / 2**20
    print(f"model: {n_params / 1e6:.1f}M parameters, {weights_mib:.0f} MiB of fp32 weights")
    print("| training | KL coefficient | RSS after set-up (MiB) | peak RSS over 3 steps (MiB) |\n|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['kl_coef']} | {r['loaded_mib']:.0f} | {r['peak_mib']:.0f} |")
    by = {(r["mode"], r["kl_coef"]): r["peak_mib"] for r in rows}
    print(f"cost of the KL reference: full {by['full', 0.05] - by['full', 0.0]:+.0f} MiB, "
          f"LoRA {by['lora', 0.05] - by['lora', 0.0]:+.0f} MiB (one copy of the weights: {weights_mib:.0f} MiB)")  # fmt: skip
    out = Path(__file__).parent / "results" / "rl_memory.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"params": n_params, "weights_mib": weights_mib, "runs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
