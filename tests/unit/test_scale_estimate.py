"""The scale estimate's arithmetic, and the counts it reads off a model's architecture."""

import json

import pytest

from bench.gpu_probe import cli as probe_cli
from bench.scale_estimate import (
    GPUS,
    PRESETS,
    SCENARIOS,
    ModelFigures,
    decode_tokens_per_s,
    estimate,
    measure_model,
    train_tokens_per_s,
    workload,
)
from tasks.config import load_config

FIGURES = ModelFigures(
    params=10**9,
    train_flops_per_token=6e9,
    forward_flops_per_token=2e9,
    weight_bytes=2 * 10**9,
    kv_bytes_per_token=10_000,
    seq_len=1024,
)


def test_the_preset_counts_qwen2_5_1_5b_and_about_six_flops_per_parameter_and_token():
    m = measure_model(PRESETS["qwen2.5-1.5b"], seq_len=256)
    assert m.params == 1_543_714_304  # Qwen2.5-1.5B's published size, tied embeddings
    assert m.kv_bytes_per_token == 2 * 28 * 2 * 128 * 2  # K and V, 28 layers, 2 KV heads, bf16
    assert 6 * m.params < m.train_flops_per_token < 7 * m.params
    assert m.train_flops_per_token == pytest.approx(3 * m.forward_flops_per_token, rel=0.01)


def test_decode_is_bound_by_the_slower_of_memory_and_compute_plus_the_step_overhead():
    gpu, e = GPUS["h100"], SCENARIOS["middle"]
    context = 500
    read = (2e9 + e.concurrent * context * 10_000) / (gpu.bandwidth * e.decode_bandwidth)
    compute = e.concurrent * 2e9 / (gpu.bf16_flops * e.decode_compute)
    expected = e.concurrent / (max(read, compute) + e.step_overhead_s)
    assert decode_tokens_per_s(FIGURES, gpu, e, context) == pytest.approx(expected)
    # A faster memory decodes faster while memory bound.
    assert decode_tokens_per_s(FIGURES, GPUS["h200"], e, context) > expected
    rate = train_tokens_per_s(FIGURES, gpu, e, checkpointing=True)
    assert rate == pytest.approx(gpu.bf16_flops * e.mfu / 8e9)  # recomputation: one forward more


def test_the_workload_caps_rows_per_seed_and_replays_earlier_generations():
    cfg = load_config("configs/real_sft_v3.yaml")
    first = workload(cfg, completion_share=0.5, prompt_tokens=100, accept_rate=0.9, generation=1)
    third = workload(cfg, completion_share=0.5, prompt_tokens=100, accept_rate=0.9, generation=3)
    assert first.samples == cfg.seeds.count * cfg.sampling.n
    assert first.train_rows == cfg.seeds.count * cfg.curation.max_per_seed  # 7.2 a seed, cap 4
    assert third.train_rows == 3 * first.train_rows  # replay on
    assert first.eval_samples == cfg.eval.suite_size * (cfg.eval.k + 1)  # k samples + greedy
    assert first.completion_tokens == 0.5 * cfg.sampling.max_tokens


def test_measured_rates_replace_the_roofline():
    cfg = load_config("configs/real_sft_v3.yaml")
    w = workload(cfg, 0.6, 150, 0.3, 1)
    probe = {"decode_tokens_per_s": 1000.0, "train_tokens_per_s": 500.0}
    args = (FIGURES, GPUS["h100"], 8, w, SCENARIOS["fast"], 10.0, 700.0, True)
    roofline, measured = estimate(*args), estimate(*args, probe=probe)
    assert measured["decode_tokens_per_s_per_gpu"] == 1000.0
    assert measured["stages_s"]["train (DDP)"] == pytest.approx(w.train_tokens / (8 * 500.0))
    assert measured["total_s"] > roofline["total_s"]
    assert measured["stages_s"]["curate (one CPU process)"] == pytest.approx(w.samples / 700.0)
    assert measured["total_s"] == pytest.approx(sum(measured["stages_s"].values()))


def test_the_cli_prints_every_stage_of_each_generation_asked_for(capsys):
    from bench.scale_estimate import cli

    assert cli(["--config", "configs/real_sft_v3.yaml", "--generations", "1", "3"]) == 0
    text = capsys.readouterr().out
    assert "configs/real_sft_v3.yaml" in text and "/work" not in text.splitlines()[0]
    assert text.count("generate + eval (vLLM)") == 2 and text.count("total") == 2
    assert "not measured on a GPU" in text


def test_the_gpu_probe_runs_a_tiny_shape_on_cpu(tmp_path):
    out = tmp_path / "probe.json"
    argv = ["--model", "tiny", "--device", "cpu", "--batch", "2", "--seq-len", "32"]
    argv += ["--steps", "1", "--gen-batch", "2", "--prompt", "4", "--new", "8", "--out", str(out)]
    assert probe_cli(argv) == 0
    data = json.loads(out.read_text())
    assert data["train"]["tokens_per_s"] == data["train_tokens_per_s"] > 0
    assert data["generate"]["tokens_per_s"] == data["decode_tokens_per_s"] > 0
    assert data["generate"]["new"] == 8 and data["train"]["seq_len"] == 32
