"""Training recipes, one function per `train.mode`, each a plain function of its request.

A recipe takes its request (`tasks.requests`: SFTRequest, GRPORequest, GKDRequest, DPORequest),
reads a Parquet file (curated samples for SFT and GKD, seeds with gold answers for GRPO,
preference pairs for DPO), trains from a
base Hugging Face checkpoint, writes the result as a Hugging Face folder (safetensors,
tokenizer, generation config) and returns its metrics as a JSON-able dict. `tasks.train` runs
them in their own process; `TRAINERS` is the only registry of them, keyed by each request's
mode, and `recipe` imports only the one a worker runs (GRPO's TRL trainer pulls in vLLM's client
and GKD's its own stack: an SFT worker would spend seconds of CPU importing what it never uses).
`tasks.trainers.common` holds what the recipes share.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from tasks.requests import DPORequest, GKDRequest, GRPORequest, SFTRequest

TRAINERS = {
    SFTRequest.mode: "tasks.trainers.sft:train_sft",
    GRPORequest.mode: "tasks.trainers.grpo:train_grpo",
    GKDRequest.mode: "tasks.trainers.gkd:train_gkd",
    DPORequest.mode: "tasks.trainers.dpo:train_dpo",
}


def recipe(mode: str) -> Callable[[Any], dict]:
    """The training function of `mode`, imported now (with only its own dependencies)."""
    module, _, name = TRAINERS[mode].partition(":")
    return getattr(importlib.import_module(module), name)
