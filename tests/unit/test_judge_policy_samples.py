"""The judge's policy-sample pool: training questions only, rule labels, class-balanced draws,
the mix into training batches, and the cache key that names the policy and the sample count.

The bootstrap tests run `bootstrap_judge` with 0 training steps and the policy's sampling
replaced by fixed completions, so they check the recipe and the batches without a model."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from tasks.config import FlywheelConfig
from tasks.domains import DOMAINS, eval_suite
from tasks.judge_data import (
    Candidate,
    balanced_draw,
    fresh_candidates,
    policy_candidates,
    training_seeds,
)
from tasks.requests import policy_sampling

ARITH = DOMAINS["arith"]


def test_training_seeds_never_hold_an_excluded_question():
    suite = {s.question for s in eval_suite(ARITH, 512) if s.difficulty <= 1}
    seeds = training_seeds(random.Random(0), 300, [1], suite)
    assert len(seeds) == 300
    assert not suite & {s.question for s in seeds}
    assert {s.difficulty for s in seeds} == {1}
    # deterministic: the same stream gives the same questions
    assert seeds == training_seeds(random.Random(0), 300, [1], suite)


def test_policy_candidates_are_labelled_by_the_rules():
    seeds = training_seeds(random.Random(1), 3, [2])
    right = ARITH.solution(seeds[0].question)
    wrong_answer = ARITH.solution(seeds[1].question).replace(
        f"<answer>{seeds[1].answer}</answer>", "<answer>999</answer>"
    )
    cands = policy_candidates(seeds, [right, wrong_answer, "no tags at all"])
    assert [c.accept for c in cands] == [True, False, False]
    assert {c.kind for c in cands} == {"policy"}
    assert [c.question for c in cands] == [s.question for s in seeds]


def _pool(accepts: int, rejects: int) -> list[Candidate]:
    return [Candidate(f"a{i}", "", "", "policy", True) for i in range(accepts)] + [
        Candidate(f"r{i}", "", "", "policy", False) for i in range(rejects)
    ]


def test_balanced_draw_learns_rare_accepts():
    """Rules accept 1 % of the pool; drawn balanced, half of the training draws are accepts.
    Control: drawing in proportion gives about 1 %."""
    pool = _pool(2, 198)
    draws = balanced_draw(random.Random(0), pool, 2000)
    share = sum(c.accept for c in draws) / len(draws)
    proportional = random.Random(0).choices(pool, k=2000)
    control = sum(c.accept for c in proportional) / len(proportional)
    print(f"\naccept share: balanced {share:.3f}, proportional control {control:.3f}")
    assert 0.45 < share < 0.55
    assert control < 0.05
    assert {c.question for c in draws if c.accept} == {"a0", "a1"}  # every accept is used


def test_balanced_draw_with_one_class_or_none():
    assert all(not c.accept for c in balanced_draw(random.Random(0), _pool(0, 5), 50))
    assert all(c.accept for c in balanced_draw(random.Random(0), _pool(5, 0), 50))
    with pytest.raises(ValueError, match="empty"):
        balanced_draw(random.Random(0), [], 3)


# -- the bootstrap: recipe and batches -----------------------------------------------------------
SMALL = dict(hidden_size=32, intermediate_size=64, num_heads=2, steps=0, batch_size=8)
SAMPLING = policy_sampling(FlywheelConfig())  # the default flywheel's generation settings
MARK = "zzz"  # a policy completion no synthetic candidate contains


def _fake_policy(root: Path, name: str, size: int = 100) -> str:
    """A checkpoint-looking folder (config + weights) without a manifest."""
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "name": name}))
    (folder / "model.safetensors").write_bytes(b"\0" * size)
    return str(folder)


@pytest.fixture
def bootstrap(monkeypatch):
    """`bootstrap_judge` with the policy's sampling replaced by fixed, rule-labelled text, and
    the training loop replaced by one recorded batch."""
    from tasks import judge_bootstrap as jb

    batches = []

    def fake_pool(policy, size, sampling, *, levels, excluded, domain, seed, progress):
        seeds = training_seeds(random.Random(seed), size, levels, excluded, domain)
        texts = [
            ARITH.solution(s.question) if i % 10 == 0 else f"<think>{MARK}</think>"
            for i, s in enumerate(seeds)
        ]
        return policy_candidates(seeds, texts, domain)

    def fake_pretrain(model, next_batch, **kw):
        batches.append(next_batch())
        return [0.0]

    monkeypatch.setattr(jb, "policy_pool", fake_pool)
    monkeypatch.setattr(jb, "pretrain", fake_pretrain)
    return jb, batches


def test_cache_key_names_policy_samples_and_the_policy(bootstrap, tmp_path):
    jb, _ = bootstrap
    p1, p2 = _fake_policy(tmp_path, "p1"), _fake_policy(tmp_path, "p2", size=101)
    root = tmp_path / "models"
    plain = jb.bootstrap_judge(root, exclude=(), progress=False, **SMALL)

    def build(policy, samples, sampling=SAMPLING):
        return jb.bootstrap_judge(
            root,
            exclude=(),
            policy=policy,
            policy_samples=samples,
            policy_sampling=sampling,
            progress=False,
            **SMALL,
        )

    folders = {
        "plain": plain,
        "p1-4": build(p1, 4),
        "p1-8": build(p1, 8),
        "p2-8": build(p2, 8),
        "p1-8-cold": build(p1, 8, replace(SAMPLING, temperature=0.5)),
    }
    assert len(set(folders.values())) == len(folders)
    # a policy given with 0 samples changes nothing: the synthetic-only recipe exactly
    assert jb.bootstrap_judge(root, exclude=(), policy=p1, progress=False, **SMALL) == plain
    recipe = json.loads((plain / "recipe.json").read_text())
    assert not [k for k in recipe if k.startswith("policy")]
    with_policy = json.loads((folders["p1-8"] / "recipe.json").read_text())
    assert with_policy["policy_samples"] == 8
    assert with_policy["policy"] == jb.policy_fingerprint(p1)
    # The sampling settings in the cache key: these names and values, so a cached judge of the
    # default flywheel stays found.
    assert with_policy["policy_sampling"] == {
        "temperature": 1.0,
        "top_p": 1.0,
        "max_tokens": 96,
        "prompt_template": "Q: {question}\n",
        "chat_template": False,
        "system_prompt": None,
        "max_model_len": 256,
        "dtype": "float32",
        "hf_batch_size": 256,
    }


def test_policy_samples_without_a_policy_is_an_error(bootstrap, tmp_path):
    jb, _ = bootstrap
    with pytest.raises(ValueError, match="policy checkpoint"):
        jb.bootstrap_judge(tmp_path, exclude=(), policy_samples=4, progress=False, **SMALL)
    with pytest.raises(ValueError, match="policy_sampling"):
        jb.bootstrap_judge(
            tmp_path, exclude=(), policy="/p", policy_samples=4, progress=False, **SMALL
        )


def _documents(batch, tokenizer) -> list[str]:
    ids, mask, *_ = batch
    return [tokenizer.decode(row[m.bool()].tolist()) for row, m in zip(ids, mask, strict=True)]


def test_batches_mix_policy_samples_balanced(bootstrap, tmp_path):
    """Half of every batch comes from the policy pool, balanced between its classes although
    the rules accept only a tenth of it."""
    jb, batches = bootstrap
    policy = _fake_policy(tmp_path, "p")
    jb.bootstrap_judge(
        tmp_path / "m",
        exclude=(),
        policy=policy,
        policy_samples=200,
        policy_sampling=SAMPLING,
        progress=False,
        **{**SMALL, "batch_size": 400},
    )
    docs = _documents(batches[0], jb.build_tokenizer())
    from_policy = [d for d in docs if MARK in d]
    # rejected policy samples carry the mark; half the batch is policy, half of that rejects
    assert 0.18 < len(from_policy) / len(docs) < 0.32
    assert all("VERDICT: reject" in d for d in from_policy)


def test_no_policy_samples_keeps_the_synthetic_stream(bootstrap, tmp_path):
    """policy_samples=0 trains on exactly the synthetic batches (same rng stream as before)."""
    jb, batches = bootstrap
    jb.bootstrap_judge(tmp_path, exclude=(), progress=False, **SMALL)
    docs = _documents(batches[0], jb.build_tokenizer())
    expected = fresh_candidates(
        random.Random("judge-bootstrap/0"), 8, [1, 2, 3], set(), "arith", jb.TRAIN_WEIGHTS
    )
    assert len(docs) == 8
    for d, c in zip(docs, expected, strict=True):
        assert c.question in d and judge_copy(c.completion) in d


def judge_copy(completion: str) -> str:
    from tasks.judge_data import judge_notes

    return judge_notes(completion)[0]


# -- the stage's request -------------------------------------------------------------------------
def _suite(tmp_path: Path) -> Path:
    from tasks import store
    from tasks.records import to_rows

    folder = tmp_path / "suite"
    folder.mkdir()
    store.write_parquet(to_rows(eval_suite(ARITH, 8)), folder / "seeds.parquet")
    return folder


def test_judge_request_carries_the_flywheel_sampling_only_with_policy_samples(tmp_path):
    from tasks.stages import judge_request

    suite = _suite(tmp_path)
    off = judge_request(FlywheelConfig(judge={"policy_samples": 0}), suite, "/some/policy")
    assert (off.policy, off.policy_samples, off.policy_sampling) == (None, 0, None)
    on = FlywheelConfig(
        judge={"policy_samples": 64},
        sampling={"temperature": 0.7, "max_tokens": 50},
        model={"prompt_template": "Question: {question}\n"},
    )
    req = judge_request(on, suite, "/some/policy")
    assert req.policy == "/some/policy" and req.policy_samples == 64
    sampling = req.policy_sampling
    assert sampling is not None and (sampling.temperature, sampling.max_tokens) == (0.7, 50)
    assert sampling.prompt_template == "Question: {question}\n"
    assert len(req.exclude) == 8
    with pytest.raises(ValueError, match="policy_samples"):
        judge_request(on, suite, None)


def test_demo_config_trains_its_judge_on_policy_samples():
    from tasks.config import JudgeConfig, load_config

    root = Path(__file__).resolve().parents[2]
    assert load_config(root / "configs" / "demo.yaml").judge.policy_samples == 1024
    assert JudgeConfig().policy_samples == 2048
    assert load_config(root / "configs" / "tiny.yaml").judge.policy_samples == 0
