"""STaR's rationalization through the real generate and curate stages (hf backend): a tiny
Llama taught, in a few seconds, to answer 3 to a plain prompt and 7 to a prompt that carries a
hint. So of the seeds 1+2 (3), 3+4 (7) and 2+3 (5), the policy solves the first only; the other
two are sampled again with their answer shown, and only 3+4's hinted answers verify."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tasks import store
from tasks.config import load_config
from tasks.rationalize import RATIONALIZE
from tasks.records import Sample, Seed, from_rows, to_rows
from tasks.rewards import accuracy_verdicts
from tasks.stages import curate_stage, generate_stage
from tests.conftest import build_tiny_model
from tests.runs import TINY

pytestmark = pytest.mark.slow

PLAIN_ANSWER, HINTED_ANSWER = "3", "7"
STEPS = 60  # twice what gave 50 of 50 samples of each habit at temperature 0.3


def _train_two_habits(out: Path, hint: str) -> str:
    """The tiny random Llama, trained on completions only: `PLAIN_ANSWER` after a plain prompt,
    `HINTED_ANSWER` after a hinted one (whatever answer the hint shows)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(out, seed=3)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    rng = random.Random(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matmuls on a busy machine
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(STEPS):
        batch = []
        for _ in range(16):
            q = f"{rng.randrange(10)}+{rng.randrange(10)}"
            hinted = rng.random() < 0.5
            shown = hint.format(question=q, answer=rng.randrange(20)) if hinted else q
            answer = HINTED_ANSWER if hinted else PLAIN_ANSWER
            prompt = tok(f"Q: {shown}\n")["input_ids"]
            completion = tok(f"<think></think><answer>{answer}</answer>", add_special_tokens=False)[
                "input_ids"
            ] + [tok.eos_token_id]
            batch.append((prompt, completion))
        width = max(len(p) + len(c) for p, c in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        for i, (p, c) in enumerate(batch):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
        loss = model(input_ids=ids, attention_mask=(labels != -100) | (ids != 0), labels=labels)
        loss.loss.backward()
        opt.step()
        opt.zero_grad()
    torch.set_num_threads(threads)
    model.save_pretrained(path)
    return str(path)


def test_failed_seeds_are_rationalized_and_only_verified_ones_train(tmp_path):
    cfg = load_config(
        TINY,
        runs_dir=str(tmp_path),
        **{
            "sampling.n": 2,
            "sampling.temperature": 0.3,
            "sampling.rationalize.n": 2,
            "engine.cpu_threads": 1,
            # No answer check among the rewards: a hinted sample must still verify to be kept.
            "curation.rewards": ["format"],
            "curation.max_per_seed": 8,
            "hygiene.near_dup": None,
        },
    )
    model = _train_two_habits(tmp_path / "policy", cfg.sampling.rationalize.hint)
    seeds = [Seed.make("1+2", "3"), Seed.make("3+4", "7"), Seed.make("2+3", "5")]
    solved, told, wrong = (s.id for s in seeds)
    seeds_folder = tmp_path / "seeds"
    seeds_folder.mkdir()
    store.write_parquet(to_rows(seeds), seeds_folder / "seeds.parquet")

    folder = generate_stage.fn(cfg, 1, model, seeds_folder)
    out = store.read_manifest(folder, verify=True).outputs
    samples = from_rows(Sample, store.read_parquet(folder / "samples.parquet"))
    plain = [s for s in samples if s.template == "plain"]
    hinted = [s for s in samples if s.template == RATIONALIZE]

    def verifies(group: list[Sample]) -> list[bool]:
        checks = accuracy_verdicts(
            [s.completion for s in group], [s.answer for s in group], domain="arith"
        )
        return [v.outcome == "accept" for v in checks]

    # The policy learnt its plain habit: it solves 1+2 only.
    assert {s.seed_id for s, ok in zip(plain, verifies(plain), strict=True) if ok} == {solved}
    # Hinted samples for the failed seeds only, n each, by the policy, on the plain prompt.
    assert sorted(s.seed_id for s in hinted) == sorted([told, told, wrong, wrong])
    assert {s.model for s in hinted} == {model}
    assert {s.prompt for s in hinted} == {"Q: 3+4\n", "Q: 2+3\n"}
    assert len({s.id for s in samples}) == len(samples) == 3 * 2 + 4
    # It saw the hint: it answered with its hinted habit, which 3+4 verifies and 2+3 does not.
    assert all(f"<answer>{HINTED_ANSWER}</answer>" in s.completion for s in hinted)
    assert out["rationalize"] == {"seeds": 2, "samples": 4, "verified": 2}
    assert [(r["template"], r["rows"]) for r in out["sources"]] == [
        ("plain", 6),
        (RATIONALIZE, 4),
    ]
    assert out["samples"] == out["rows"] == 10

    curated = curate_stage.fn(cfg, 1, folder)
    accepted = from_rows(Sample, store.read_parquet(curated / "accepted.parquet"))
    kept_hinted = [s for s in accepted if s.template == RATIONALIZE]
    assert {s.seed_id for s in kept_hinted} == {told} and all(verifies(kept_hinted))
    # `format` alone accepts the plain samples of every seed, but no unverified hinted one.
    assert {s.seed_id for s in accepted if s.template == "plain"} == {solved, told, wrong}
    verdicts = store.read_parquet(curated / "verdicts.parquet")
    wrong_hinted = {s.id for s in hinted if s.seed_id == wrong}
    assert {v["reason"] for v in verdicts if v["sample_id"] in wrong_hinted} == {
        "rationalize:accuracy:wrong"
    }
    assert all("answer is" not in s.prompt for s in accepted)
    counts = store.read_manifest(curated).outputs["counts"]
    assert (counts["rationalize:accept"], counts["rationalize:reject"]) == (2, 2)

    # Resumable as before: a landed stage is read, not redone.
    before = (folder / "manifest.json").read_bytes()
    assert generate_stage.fn(cfg, 1, model, seeds_folder) == folder
    assert (folder / "manifest.json").read_bytes() == before
