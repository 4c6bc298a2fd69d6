"""How long one flywheel generation takes for a real model on a GPU node: an estimate from
per-token figures, each named with where it comes from.

    python -m bench.scale_estimate                                    # Qwen2.5-1.5B, 8 H100s
    python -m bench.scale_estimate --config configs/real_grpo.yaml --gpus 4 --gpu h200
    python -m bench.scale_estimate --probe <files_at>/gpu-probe.json   # measured GPU rates
    python -m bench.scale_estimate --save           # and bench/results/<stamp>-scale.json

What is measured, and where:
- the model's per-token work, counted by `torch.utils.flop_counter` on the real architecture
  (built on the meta device, no weights): training FLOPs per token (forward + backward, at
  `train.max_length`), forward FLOPs per token, weight bytes and KV-cache bytes per token;
- the work of one generation, from the flywheel config: seeds x n samples, the eval's suite x k
  samples and greedy pass, the training rows (accepted samples, capped per seed, replayed) x epochs;
- the rule verifier's verdicts per CPU second (this machine's CPU; curation is one process);
- the stage dispatch of a deployment run (Prefect work pools), from
  `bench/results/*-dispatch.json` (this machine: a worker's poll interval and flow start).
What is assumed, and printed beside the result:
- the GPU's peak bf16 FLOP/s and memory bandwidth (its data sheet), and how much of them the
  engines reach: training MFU, decode bandwidth and compute shares, vLLM's per-step overhead and
  concurrent sequences. Three scenarios bracket them. `--probe` replaces training and generation
  rates with those `bench/gpu_probe.py` measured on a lent GPU;
- token lengths of a real chain of thought (`--completion-share` of `sampling.max_tokens`,
  `--prompt-tokens`) and the accept rate (`--accept-rate`), which depend on model and data;
- the fixed costs a GPU adds: vLLM's engine start (weights + CUDA graphs) per engine stage, and
  a training worker's start and checkpoint save.

Data parallel throughout: one vLLM replica per GPU (`engine.replicas`), one DDP process per GPU
(`train.num_processes`); a 1.5B model fits one GPU, so no tensor parallel.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEFAULT_CONFIG = ROOT / "configs" / "real_sft_v3.yaml"

# Qwen2.5-1.5B's architecture (its config.json): the model the README's GPU presets name.
PRESETS: dict[str, dict] = {
    "qwen2.5-1.5b": dict(
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    ),
    "qwen2.5-0.5b": dict(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
    ),
}


@dataclasses.dataclass(frozen=True)
class Gpu:
    """A GPU's data-sheet peaks (dense bf16, no sparsity)."""

    name: str
    bf16_flops: float
    bandwidth: float  # bytes/s


GPUS = {
    "h100": Gpu("NVIDIA H100 SXM 80GB", 989.4e12, 3.35e12),
    "h200": Gpu("NVIDIA H200 SXM 141GB", 989.4e12, 4.8e12),
}


@dataclasses.dataclass(frozen=True)
class ModelFigures:
    """Per-token work of one architecture, counted (not timed)."""

    params: int
    train_flops_per_token: float  # forward + backward, at seq_len, no recomputation
    forward_flops_per_token: float  # at seq_len
    weight_bytes: int  # bf16
    kv_bytes_per_token: int  # bf16 K and V over all layers
    seq_len: int


def measure_model(arch: dict, seq_len: int) -> ModelFigures:
    """Count `arch`'s (Qwen2 keyword arguments) FLOPs per token on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**arch)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    ids = torch.zeros(1, seq_len, dtype=torch.long, device="meta")
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=ids, labels=ids).loss.backward()
    train = counter.get_total_flops() / seq_len
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(input_ids=ids)
    forward = counter.get_total_flops() / seq_len
    params = sum(p.numel() for p in model.parameters())
    head_dim = config.hidden_size // config.num_attention_heads
    kv = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 2
    return ModelFigures(params, train, forward, 2 * params, kv, seq_len)


@dataclasses.dataclass(frozen=True)
class Workload:
    """The tokens one generation processes."""

    samples: int  # generation: seeds x n
    eval_samples: int  # the suite x k, plus the greedy pass
    prompt_tokens: int
    completion_tokens: float  # mean per sample
    train_rows: float  # rows trained on this generation (replay included), per epoch
    epochs: float

    @property
    def decode_tokens(self) -> float:
        return (self.samples + self.eval_samples) * self.completion_tokens

    @property
    def prefill_tokens(self) -> float:
        return (self.samples + self.eval_samples) * self.prompt_tokens

    @property
    def train_tokens(self) -> float:
        return self.train_rows * self.epochs * (self.prompt_tokens + self.completion_tokens)


def workload(
    cfg, completion_share: float, prompt_tokens: int, accept_rate: float, generation: int
) -> Workload:
    """One generation of `cfg` (a FlywheelConfig): samples and eval as configured; training
    rows = accepted samples capped per seed, times the generations replayed."""
    seeds, n = cfg.seeds.count, cfg.sampling.n
    per_seed = min(n * accept_rate, cfg.curation.max_per_seed or n)
    replayed = generation if cfg.train.replay else 1
    return Workload(
        samples=seeds * n,
        eval_samples=cfg.eval.suite_size * (cfg.eval.k + 1),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_share * cfg.sampling.max_tokens,
        train_rows=seeds * per_seed * replayed,
        epochs=cfg.train.epochs,
    )


@dataclasses.dataclass(frozen=True)
class Efficiency:
    """What share of the GPU's peaks the engines reach, and the fixed costs a GPU stage adds."""

    mfu: float  # training: achieved / peak bf16 FLOP/s
    decode_bandwidth: float  # decode: achieved / peak memory bandwidth
    decode_compute: float  # decode: achieved / peak FLOP/s
    step_overhead_s: float  # vLLM's per-step scheduling, sampling and launch time
    concurrent: int  # sequences decoded together per replica (vLLM's max_num_seqs)
    engine_start_s: float  # vLLM start on a GPU: weights, profiling, CUDA graph capture
    train_start_s: float  # accelerate launch, imports, model load, checkpoint save


SCENARIOS = {
    "fast": Efficiency(0.45, 0.75, 0.6, 0.002, 512, 45.0, 45.0),
    "middle": Efficiency(0.35, 0.6, 0.5, 0.004, 256, 90.0, 90.0),
    "slow": Efficiency(0.25, 0.4, 0.35, 0.008, 128, 180.0, 180.0),
}


def decode_tokens_per_s(m: ModelFigures, gpu: Gpu, e: Efficiency, context: float) -> float:
    """One replica's decode rate: each step reads the weights and every sequence's KV cache and
    does a forward per sequence, whichever takes longer, plus the engine's own step time."""
    read = (m.weight_bytes + e.concurrent * context * m.kv_bytes_per_token) / (
        gpu.bandwidth * e.decode_bandwidth
    )
    compute = e.concurrent * m.forward_flops_per_token / (gpu.bf16_flops * e.decode_compute)
    return e.concurrent / (max(read, compute) + e.step_overhead_s)


def train_tokens_per_s(m: ModelFigures, gpu: Gpu, e: Efficiency, checkpointing: bool) -> float:
    """One DDP process's training rate: FLOPs per token (plus a forward's recomputation with
    gradient checkpointing) at the scenario's MFU."""
    flops = m.train_flops_per_token + (m.forward_flops_per_token if checkpointing else 0.0)
    return gpu.bf16_flops * e.mfu / flops


def estimate(
    m: ModelFigures,
    gpu: Gpu,
    gpus: int,
    w: Workload,
    e: Efficiency,
    dispatch_s: float,
    verdicts: float,
    checkpointing: bool,
    probe: dict | None = None,
) -> dict:
    """Seconds per stage of one generation on `gpus` GPUs, and the rates they came from."""
    context = w.prompt_tokens + w.completion_tokens / 2
    decode = (probe or {}).get("decode_tokens_per_s") or decode_tokens_per_s(m, gpu, e, context)
    train = (probe or {}).get("train_tokens_per_s") or train_tokens_per_s(m, gpu, e, checkpointing)
    prefill_s = w.prefill_tokens * m.forward_flops_per_token / (gpu.bf16_flops * e.decode_compute)
    gen_s = (w.decode_tokens / decode + prefill_s) / gpus  # samples spread over the replicas
    train_s = w.train_tokens / (gpus * train)
    engines = 2  # generate and eval each start vLLM; the judge stage is a third if configured
    stages = {
        "generate + eval (vLLM)": gen_s,
        "engine starts (2)": engines * e.engine_start_s,
        "curate (one CPU process)": w.samples / verdicts,
        "train (DDP)": train_s,
        "train worker start + save": e.train_start_s,
        "dispatch (5 deployments)": 5 * dispatch_s,
    }
    return {
        "stages_s": stages,
        "total_s": sum(stages.values()),
        "decode_tokens_per_s_per_gpu": decode,
        "train_tokens_per_s_per_gpu": train,
        "decode_tokens": w.decode_tokens,
        "train_tokens": w.train_tokens,
    }


def verdicts_per_s(domain: str, count: int = 1000) -> float:
    """The domain's rule verifier (math: math-verify) on `count` answers of its own generator,
    a third of them wrong, half in `\\boxed{}`: verdicts per CPU second of this process."""
    import random
    import time

    from tasks.domains import DOMAINS

    dom, rng = DOMAINS[domain], random.Random(0)
    pairs = []
    for i in range(count):
        seed = dom.generate(rng, rng.randint(1, 5))
        answer = seed.answer if i % 3 else seed.answer + "1"
        pairs.append((f"\\boxed{{{answer}}}" if i % 2 else answer, seed.answer))
    start = time.process_time()
    for answer, gold in pairs:
        dom.verify(answer, gold)
    return count / (time.process_time() - start)


def measured_dispatch() -> tuple[float, str]:
    """The median per-stage dispatch of the newest deployment-dispatch bench run."""
    files = sorted(RESULTS.glob("*-dispatch.json"))
    if not files:
        return 12.0, "no dispatch bench run saved: 12 s assumed"
    data = json.loads(files[-1].read_text())
    values = [s["dispatch_s"] for r in data["rounds"] for s in r["stages"]]
    return statistics.median(values), f"median of {len(values)} stages in {files[-1].name}"


def _shown(path: Path) -> str:
    """`path` relative to the repository when inside it, else absolute."""
    full = path.resolve()
    return str(full.relative_to(ROOT)) if full.is_relative_to(ROOT) else str(full)


def _fmt(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def run(args: argparse.Namespace) -> dict:
    from tasks.config import load_config

    cfg = load_config(args.config)
    arch = PRESETS[args.model]
    figures = measure_model(arch, cfg.train.max_length)
    gpu = GPUS[args.gpu]
    probe = json.loads(Path(args.probe).read_text()) if args.probe else None
    dispatch, dispatch_src = measured_dispatch()
    verdicts = verdicts_per_s(cfg.domain)
    out = {
        "model": args.model,
        "config": _shown(args.config),
        "gpu": gpu.name,
        "gpus": args.gpus,
        "figures": dataclasses.asdict(figures),
        "assumed": {
            "completion_share": args.completion_share,
            "prompt_tokens": args.prompt_tokens,
            "accept_rate": args.accept_rate,
            "scenarios": {k: dataclasses.asdict(v) for k, v in SCENARIOS.items()},
        },
        "verdicts_per_cpu_s": verdicts,
        "dispatch_s": dispatch,
        "dispatch_source": dispatch_src,
        "probe": probe,
        "generations": {},
    }
    for g in args.generations:
        w = workload(cfg, args.completion_share, args.prompt_tokens, args.accept_rate, g)
        out["generations"][g] = {
            "workload": dataclasses.asdict(w),
            "scenarios": {
                name: estimate(
                    figures,
                    gpu,
                    args.gpus,
                    w,
                    e,
                    dispatch,
                    verdicts,
                    cfg.train.gradient_checkpointing,
                    probe,
                )
                for name, e in SCENARIOS.items()
            },
        }
    return out


def report(out: dict) -> str:
    f = out["figures"]
    lines = [
        f"{out['model']} on {out['gpus']} x {out['gpu']}, {out['config']}",
        f"counted: {f['params'] / 1e9:.2f} B parameters, {f['train_flops_per_token'] / 1e9:.2f} "
        f"GFLOP/token trained and {f['forward_flops_per_token'] / 1e9:.2f} forward (at "
        f"{f['seq_len']} tokens), {f['kv_bytes_per_token'] / 1024:.0f} KiB KV cache/token",
        f"measured here: {out['verdicts_per_cpu_s']:.0f} rule verdicts per CPU second; dispatch "
        f"per stage {out['dispatch_s']:.1f} s ({out['dispatch_source']})",
        "assumed: completion = {completion_share} x max_tokens, {prompt_tokens} prompt tokens, "
        "accept rate {accept_rate}".format(**out["assumed"]),
        "rates: "
        + (
            f"measured by gpu_probe on {out['probe'].get('device_name')} (generation: "
            f"{out['probe'].get('decode_engine')}); the scenarios differ in fixed costs only"
            if out["probe"]
            else "roofline x the scenarios' shares of the GPU's peaks (not measured on a GPU)"
        ),
    ]
    for g, gen in out["generations"].items():
        w, first = gen["workload"], next(iter(gen["scenarios"].values()))
        lines.append(
            f"\ngeneration {g}: {w['samples'] + w['eval_samples']:,} samples, "
            f"{first['decode_tokens'] / 1e6:.1f} M tokens decoded, "
            f"{first['train_tokens'] / 1e6:.1f} M trained"
        )
        names = list(gen["scenarios"])
        lines.append(f"  {'stage':28}" + "".join(f"{n:>12}" for n in names))
        for stage in first["stages_s"]:
            row = "".join(f"{_fmt(gen['scenarios'][n]['stages_s'][stage]):>12}" for n in names)
            lines.append(f"  {stage:28}{row}")
        total = "".join(f"{_fmt(gen['scenarios'][n]['total_s']):>12}" for n in names)
        lines.append(f"  {'total':28}{total}")
        rates = "".join(
            f"{gen['scenarios'][n]['decode_tokens_per_s_per_gpu'] / 1e3:>10.1f} k" for n in names
        )
        lines.append(f"  {'decode tokens/s per GPU':28}{rates}")
        rates = "".join(
            f"{gen['scenarios'][n]['train_tokens_per_s_per_gpu'] / 1e3:>10.1f} k" for n in names
        )
        lines.append(f"  {'train tokens/s per GPU':28}{rates}")
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--model", choices=sorted(PRESETS), default="qwen2.5-1.5b")
    p.add_argument("--gpu", choices=sorted(GPUS), default="h100")
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--generations", type=int, nargs="+", default=[1, 3])
    p.add_argument("--completion-share", type=float, default=0.6)
    p.add_argument("--prompt-tokens", type=int, default=150)
    p.add_argument("--accept-rate", type=float, default=0.3)
    p.add_argument("--probe", type=Path, help="gpu_probe.py's JSON: measured rates")
    p.add_argument("--save", action="store_true", help="write bench/results/<stamp>-scale.json")
    args = p.parse_args(argv)
    out = run(args)
    text = report(out)
    print(text)
    if args.save:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = RESULTS / f"{stamp}-scale.json"
        path.write_text(json.dumps(out | {"report": text}, indent=1) + "\n")
        print(f"\nsaved {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
