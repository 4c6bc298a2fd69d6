"""SFT with TRL on the tiny from-scratch Llama (`tiny_model`): real optimizer steps, in a worker."""

from __future__ import annotations

import dataclasses
import random
import re
from pathlib import Path

import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tasks.config import FlywheelConfig
from tasks.domains import arith
from tasks.requests import SFTRequest, sft_request, to_json
from tasks.store import read_parquet, write_parquet
from tasks.subproc import WorkerError
from tasks.train import main, train_in_subprocess
from tasks.trainers.common import NonFiniteLoss
from tasks.trainers.sft import build_trainer, train_sft

pytestmark = pytest.mark.slow


@pytest.fixture
def sft_file(tmp_path: Path) -> Path:
    """200 prompt/completion rows of the arithmetic domain with reference solutions."""
    rng = random.Random(0)
    rows = []
    for _ in range(200):
        question = arith.generate(rng, 2).question
        rows.append({"prompt": f"Q: {question}\n", "completion": arith.solution(question)})
    path = tmp_path / "train.parquet"
    write_parquet(rows, path)
    return path


TRAIN = dict(
    learning_rate=3e-3,
    epochs=5.0,
    batch_size=32,
    grad_accum=1,
    warmup_ratio=0.05,
    scheduler="cosine",
    max_length=128,
    bf16=False,
    seed=0,
)


def request(model: str, train_file: Path, out_dir: Path, **changes) -> SFTRequest:
    """The train stage's SFT request under `train: TRAIN` (generation 0: the seed as set)."""
    built = sft_request(FlywheelConfig(train=TRAIN), 0, model, train_file, out_dir)
    return dataclasses.replace(built, **changes)


def test_sft_in_subprocess_lowers_loss_and_saves_a_loadable_model(
    tiny_model: str, sft_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    log = tmp_path / "train.log"
    metrics = train_in_subprocess(request(tiny_model, sft_file, out, cpu_threads=1), log_path=log)

    assert metrics["samples"] == 200
    assert metrics["torch_threads"] == 1  # as asked (train.cpu_threads); recorded in the manifest
    assert metrics["steps"] == 35  # ceil(200 / 32) = 7 steps per epoch, 5 epochs
    history = metrics["loss_history"]
    assert [s for s, _ in history] == sorted(s for s, _ in history) and len(history) >= 10
    assert history[0][1] == metrics["train_loss_first"]
    assert history[-1][1] == metrics["train_loss_last"]
    # Random init starts near ln(vocab) ~ 3.4; a few epochs of the fixed format must cut it hard.
    assert metrics["train_loss_last"] < 0.75 * metrics["train_loss_first"]
    assert metrics["train_loss_last"] < metrics["train_loss"] < metrics["train_loss_first"]
    assert "loss" in log.read_text()  # the worker's log lines reach the stage's log file

    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json"} <= files
    assert "tokenizer.json" in files and "training_args.json" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl"))]  # nothing pickled

    trained = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    base_params = dict(base.named_parameters())
    changed = [
        name for name, p in trained.named_parameters() if not torch.equal(p, base_params[name])
    ]
    assert len(changed) == len(base_params)
    assert AutoTokenizer.from_pretrained(out).eos_token == "</s>"


def test_labels_cover_completion_and_eos_only(
    tiny_model: str, sft_file: Path, tmp_path: Path
) -> None:
    trainer = build_trainer(request(tiny_model, sft_file, tmp_path / "out"))
    tok = trainer.processing_class
    rows = 8
    examples = [
        {k: trainer.train_dataset[i][k] for k in ("input_ids", "labels")} for i in range(rows)
    ]
    batch = trainer.data_collator(examples)
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape == labels.shape and ids.shape[0] == rows

    for i, pair in enumerate(read_parquet(sft_file)[:rows]):  # prepared rows keep file order
        prompt = tok(pair["prompt"])["input_ids"]
        completion = tok(pair["completion"], add_special_tokens=False)["input_ids"]
        completion += [tok.eos_token_id]
        n, m = len(prompt), len(prompt) + len(completion)
        assert ids[i, :m].tolist() == prompt + completion
        assert (labels[i, :n] == -100).all(), "prompt tokens must not be trained on"
        assert labels[i, n:m].tolist() == completion, "completion + eos must be trained on"
        assert (labels[i, m:] == -100).all(), "padding must not be trained on"
        assert labels[i, m - 1].item() == tok.eos_token_id
        assert tok.decode(labels[i, n : m - 1]) == pair["completion"]


def test_diverging_run_fails_in_worker_and_saves_nothing(
    tiny_model: str, sft_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "model"
    diverging = request(tiny_model, sft_file, out, cpu_threads=1, learning_rate=1e30, epochs=1.0)
    with pytest.raises(WorkerError, match="NonFiniteLoss: non-finite loss"):
        train_in_subprocess(diverging)
    assert not out.exists() or not list(out.iterdir())


def test_nan_weights_stop_on_first_loss(tiny_model: str, sft_file: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in Path(tiny_model).iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    weights = load_file(corrupt / "model.safetensors")
    name = next(k for k in weights if "layers.0.mlp" in k)
    weights[name][0, 0] = float("nan")
    save_file(weights, corrupt / "model.safetensors", metadata={"format": "pt"})

    out = tmp_path / "model"
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss .* at step 1/"):
        train_sft(request(str(corrupt), sft_file, out, progress=False))
    assert not out.exists() or not list(out.iterdir())


@pytest.mark.parametrize("rows", [[], None], ids=["empty", "missing"])
def test_empty_or_missing_train_file_is_named(
    tiny_model: str, tmp_path: Path, rows: list | None
) -> None:
    path = tmp_path / "empty.parquet"
    if rows is not None:
        schema = pa.schema([("prompt", pa.string()), ("completion", pa.string())])
        write_parquet(rows, path, schema=schema)
    wire = {"mode": "sft", **to_json(request(tiny_model, path, tmp_path / "out"))}
    error, words = (FileNotFoundError, "no such") if rows is None else (ValueError, "no rows")
    with pytest.raises(error, match=re.escape(str(path)) + ".*" + words):
        main(wire)


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown training mode 'ppo'"):
        main({"mode": "ppo"})
