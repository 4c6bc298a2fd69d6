"""GKD (TRL) from a bootstrap-pretrained teacher into a random student with the same tokenizer:
the student's distribution moves towards the teacher's on the training pairs."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from tasks.bootstrap import bootstrap
from tasks.config import FlywheelConfig
from tasks.domains import arith
from tasks.requests import GKDRequest, gkd_request
from tasks.store import write_parquet
from tasks.train import train_in_subprocess
from tasks.trainers.gkd import PromptCompletionCollator, train_gkd

pytestmark = pytest.mark.slow

TRAIN = dict(
    gkd=dict(lmbda=0.5, beta=0.5, temperature=0.9, max_new_tokens=32),
    learning_rate=3e-3,
    epochs=3.0,
    batch_size=16,
    grad_accum=1,
    warmup_ratio=0.0,
    scheduler="constant",
    max_length=128,
    bf16=False,
    seed=0,
)


def request(model: str, teacher: str, train_file: Path, out_dir: Path, **changes) -> GKDRequest:
    """The train stage's GKD request under `train: TRAIN` and this teacher (generation 0)."""
    train = TRAIN | {"gkd": TRAIN["gkd"] | {"teacher": teacher}}
    built = gkd_request(FlywheelConfig(train=train), 0, model, train_file, out_dir)
    return dataclasses.replace(built, **changes)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> str:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = bootstrap(
            tmp_path_factory.mktemp("teacher"),
            hidden_size=64,
            intermediate_size=128,
            num_layers=2,
            num_heads=2,
            max_position=128,
            pretrain_steps=200,
            batch_size=32,
            learning_rate=3e-3,
            max_difficulty=1,
            seed=0,
            exclude=set(),
            progress=False,
        )
    finally:
        torch.set_num_threads(previous)
    return str(path)


@pytest.fixture
def pairs(tmp_path: Path) -> Path:
    rng = random.Random(0)
    rows = []
    for _ in range(64):
        q = arith.generate(rng, 1).question
        rows.append({"prompt": f"Q: {q}\n", "completion": arith.solution(q)})
    path = tmp_path / "train.parquet"
    write_parquet(rows, path)
    return path


def kl_to_teacher(student: str, teacher: str, rows: list[dict]) -> float:
    """Mean KL(teacher || student) over the completion tokens of `rows`."""
    tok = AutoTokenizer.from_pretrained(student)
    batch = PromptCompletionCollator(tok, 128)(rows)
    with torch.no_grad():
        s = AutoModelForCausalLM.from_pretrained(student)(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits[:, :-1]
        t = AutoModelForCausalLM.from_pretrained(teacher)(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits[:, :-1]
    mask = batch["labels"][:, 1:] != -100
    kl = F.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="none").sum(-1)
    return float(kl[mask].mean())


def test_gkd_moves_the_student_towards_the_teacher(tiny_model, teacher, pairs, tmp_path):
    import pyarrow.parquet as pq

    rows = pq.read_table(pairs).to_pylist()[:32]
    before = kl_to_teacher(tiny_model, teacher, rows)
    out = tmp_path / "model"
    metrics = train_in_subprocess(request(tiny_model, teacher, pairs, out, cpu_threads=1))
    after = kl_to_teacher(str(out), teacher, rows)
    assert metrics["steps"] == 12 and metrics["teacher"] == teacher
    # Measured: KL(teacher || student) 3.81 -> 2.44 nats per completion token in 12 steps.
    assert after < 0.75 * before, (before, after)


def test_collator_masks_prompts_and_left_pads_them(tiny_model):
    tok = AutoTokenizer.from_pretrained(tiny_model)
    rows = [
        {"prompt": "Q: 1+2\n", "completion": "<answer>3</answer>"},
        {"prompt": "Q: 10+20\n", "completion": "x"},
    ]
    b = PromptCompletionCollator(tok, 128)(rows)
    p0 = tok("Q: 1+2\n")["input_ids"]
    assert b["input_ids"][0, : len(p0)].tolist() == p0
    assert (b["labels"][0, : len(p0)] == -100).all()
    assert b["labels"][0, b["attention_mask"][0].sum() - 1] == tok.eos_token_id
    assert b["prompts"][0, -len(p0) :].tolist() == p0 and b["prompt_attention_mask"][0, 0] == 0


def test_teacher_with_another_tokenizer_is_refused(tiny_model, pairs, tmp_path):
    other = tmp_path / "other"
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model.save_pretrained(other)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.add_tokens(["<extra>"])
    tok.save_pretrained(other)
    with pytest.raises(ValueError, match="does not share the student's tokenizer"):
        train_gkd(request(tiny_model, str(other), pairs, tmp_path / "out"))
