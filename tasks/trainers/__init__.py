"""Training recipes, one function per `train.mode`, each a plain function of its request.

A recipe takes its request (`tasks.requests`: SFTRequest, GRPORequest, GKDRequest), reads a
Parquet file (curated samples for SFT and GKD, seeds with gold answers for GRPO), trains from a
base Hugging Face checkpoint, writes the result as a Hugging Face folder (safetensors,
tokenizer, generation config) and returns its metrics as a JSON-able dict. `tasks.train` runs
them in their own process; this dict is the only registry of them, keyed by each request's mode.
`tasks.trainers.common` holds what the recipes share.
"""

from tasks.requests import GKDRequest, GRPORequest, SFTRequest
from tasks.trainers.gkd import train_gkd
from tasks.trainers.grpo import train_grpo
from tasks.trainers.sft import train_sft

TRAINERS = {SFTRequest.mode: train_sft, GRPORequest.mode: train_grpo, GKDRequest.mode: train_gkd}
