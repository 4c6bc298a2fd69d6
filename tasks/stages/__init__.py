"""The stages as Prefect tasks, one module each: read inputs from disk, call the pure functions
or a worker process, write one atomic stage folder.

Each stage first looks for its own manifest: a completed stage is never redone (that is what
resume means here), and anything a stage needs from an earlier one is read from that stage's
folder, so stages hand each other paths, hashes and small outputs only. Prefect's own result
caching is off: the manifests are the cache, and they survive a killed process.

    setup     the frozen eval suite, the generation-0 policy
    seeds     a generation's seeds (file, generator, evolution, the policy's own problems)
    generate  every generator samples every seed
    curate    verifiers, judge and reward model; the accepted set
    judge     the judge's checkpoint and worker settings
    train     the challenger (SFT, GRPO, GKD, staged recipes)
    evaluate  one model on the frozen suite
    gate      challenger vs champion; the next champion
"""

from tasks.stages.common import read_seeds
from tasks.stages.curate import curate_stage
from tasks.stages.evaluate import GREEDY_ITEMS, eval_stage
from tasks.stages.gate import gate_decision, gate_stage
from tasks.stages.generate import generate_stage
from tasks.stages.judge import judge_model_path, judge_model_stage, judge_request
from tasks.stages.seeds import check_seed_inputs, load_seed_source, seeds_stage
from tasks.stages.setup import base_model_stage, check_frozen_eval, eval_settings, suite_stage
from tasks.stages.train import train_stage

__all__ = [
    "GREEDY_ITEMS",
    "base_model_stage",
    "check_frozen_eval",
    "check_seed_inputs",
    "curate_stage",
    "eval_settings",
    "eval_stage",
    "gate_decision",
    "gate_stage",
    "generate_stage",
    "judge_model_path",
    "judge_model_stage",
    "judge_request",
    "load_seed_source",
    "read_seeds",
    "seeds_stage",
    "suite_stage",
    "train_stage",
]
