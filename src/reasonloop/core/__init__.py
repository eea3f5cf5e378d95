"""Layer 1: problems, samples, steps, grades, run directories, atomic JSONL, seeding, the Generator and Verifier protocols."""

from reasonloop.core.config import Range, bounded, defaults_of, from_dict, load_config, ranged, to_dict
from reasonloop.core.generator import Generator, TokenCounts, Verifier, prompt_keys
from reasonloop.core.grading import Grade, Grader, grade_sample, mean_score
from reasonloop.core.jsonl import (
    JsonlWriter,
    WriteError,
    atomic_dir,
    atomic_write_json,
    atomic_write_text,
    read_jsonl,
    repair_jsonl,
)
from reasonloop.core.rundir import RunDir
from reasonloop.core.seeding import derive_seed, seed_everything, set_threads
from reasonloop.core.types import (
    ConfigError,
    DataError,
    Problem,
    ReasonloopError,
    Sample,
    join_steps,
    split_steps,
)

__all__ = [
    "ConfigError",
    "DataError",
    "Generator",
    "Grade",
    "Grader",
    "JsonlWriter",
    "Problem",
    "Range",
    "ReasonloopError",
    "RunDir",
    "Sample",
    "TokenCounts",
    "Verifier",
    "WriteError",
    "atomic_dir",
    "atomic_write_json",
    "bounded",
    "atomic_write_text",
    "from_dict",
    "grade_sample",
    "join_steps",
    "load_config",
    "mean_score",
    "ranged",
    "read_jsonl",
    "repair_jsonl",
    "seed_everything",
    "set_threads",
    "split_steps",
    "defaults_of",
    "derive_seed",
    "prompt_keys",
    "to_dict",
]
