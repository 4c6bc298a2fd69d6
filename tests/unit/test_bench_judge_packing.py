"""The P4 (batched judge) and P5 (packed SFT) benchmarks' pure parts: inputs, counts, ratios."""

import os

import numpy as np
import pytest

from bench import bench_judge, bench_packing, run_all
from tasks.config import FlywheelConfig, JudgeConfig
from tasks.requests import judge_settings


def test_training_pairs_mix_levels_so_lengths_vary():
    rows = bench_packing.training_pairs(50)
    assert len(rows) == 50
    assert all(r["prompt"].startswith("Q: ") and "<answer>" in r["completion"] for r in rows)
    lengths = [len(r["prompt"]) + len(r["completion"]) for r in rows]
    assert max(lengths) >= 2 * min(lengths)
    assert rows == bench_packing.training_pairs(50)  # same seed, same set


def test_real_tokens_counts_the_mask_or_every_token():
    padded = {"input_ids": np.zeros((2, 5)), "attention_mask": np.array([[1] * 5, [1, 1, 0, 0, 0]])}
    assert bench_packing.real_tokens(padded) == 7
    assert bench_packing.real_tokens({"input_ids": np.zeros((1, 9))}) == 9


def test_packed_rows_carry_a_padded_steps_tokens():
    assert bench_packing.packed_rows(1581.0, 256) == 7
    assert bench_packing.packed_rows(10.0, 256) == 1
    with pytest.raises(ValueError, match="max_length"):
        bench_packing.packed_rows(100.0, 0)


def test_timed_rate_skips_the_warmup_step_and_the_extra_batch():
    r = bench_packing.timed_rate([10.0, 11.0, 13.0], 4.0, [999, 100, 300, 555])
    assert r["tokens"] == 400 and r["seconds"] == 3.0 and r["steps_timed"] == 2
    assert r["tokens_per_s"] == pytest.approx(400 / 3) and r["warmup_s"] == 6.0
    with pytest.raises(ValueError, match="at least 2 steps"):
        bench_packing.timed_rate([1.0], 0.0, [5])
    with pytest.raises(ValueError, match="collated batches"):
        bench_packing.timed_rate([1.0, 2.0], 0.0, [5])


def test_judge_prompts_share_the_rubric_prefix_and_differ_by_nonce():
    from tasks.judge import load_rubric

    prompts = bench_judge.make_prompts(8, judge_settings(FlywheelConfig(), "m", seed=0))
    assert len(prompts) == len(set(prompts)) == 8
    head = load_rubric(JudgeConfig().rubric).template.split("{question}")[0]
    assert head and os.path.commonprefix(prompts).startswith(head)


def test_ratios_divide_batched_by_per_sample_and_packed_by_padded():
    run = {"tokens_per_s": 100.0, "candidates_per_s": 2.0}
    judge = {
        "candidates": 4,
        "k": 3,
        "max_tokens": 48,
        "same_votes_share": 1.0,
        "model": "m",
        "runs": {"batched": {**run, "tokens_per_s": 600.0}, "per_sample": run},
    }
    [p4] = bench_judge.ratios(judge)
    assert (p4.key, p4.value, p4.status) == ("P4", 6.0, "met")
    step = {"steps_timed": 3, "batch_size": 32, "max_length": 256, "mean_batch_tokens": 10.0}
    pack = {
        "samples": 8,
        "model": "m",
        "runs": {
            "packed": {**step, "tokens_per_s": 120.0},
            "padded": {**step, "tokens_per_s": 100.0},
        },
    }
    [p5] = bench_packing.ratios(pack)
    assert (p5.key, p5.value, p5.status) == ("P5", 1.2, "not met")


def test_every_mode_sizes_the_judge_and_packing_benchmarks():
    for sizes in run_all.SIZES.values():
        assert sizes["judge_candidates"] > 0 and sizes["packing_steps"] >= 2
    assert run_all.judge_missing() is None and run_all.packing_missing() is None
