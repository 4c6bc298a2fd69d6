"""Per-token rates of a model shape on the machine's accelerator, for `bench.scale_estimate
--probe`: training tokens/s (bf16 autocast over fp32 master weights, AdamW, gradient
checkpointing: the GPU presets' recipe) and generation tokens/s (Hugging Face `generate`, bf16,
one batch). Needs only torch and transformers: vLLM and TRL need not be installed, so the
generation rate is a lower bound of vLLM's. Weights are random (the shape sets the cost).

    python -m bench.gpu_probe --out gpu-probe.json                   # Qwen2.5-1.5B on cuda
    python -m bench.gpu_probe --model tiny --device cpu --out x.json # a plumbing check

On a lent GPU machine (the repository root is the working directory there):

    python -m bench.gpu_probe --out $OUT/gpu-probe.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

TINY = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=1024,
    tie_word_embeddings=True,
)


def _arch(name: str) -> dict:
    if name == "tiny":
        return TINY
    from bench.scale_estimate import PRESETS

    return PRESETS[name]


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_rate(arch: dict, device: str, batch: int, seq_len: int, steps: int) -> dict:
    """Training tokens/s of `steps` timed optimizer steps after two warm-up steps."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**arch)).to(device)
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    optim = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.startswith("cuda"))
    ids = torch.randint(0, arch["vocab_size"], (batch, seq_len), device=device)
    dtype = torch.bfloat16
    losses, times = [], []
    for i in range(steps + 2):
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
    step_s = sorted(times)[len(times) // 2]
    out = {
        "batch": batch,
        "seq_len": seq_len,
        "steps": steps,
        "step_s_median": step_s,
        "tokens_per_s": batch * seq_len / step_s,
        "loss_first_last": [losses[0], losses[-1]],
    }
    if device.startswith("cuda"):
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del model, optim
    return out


def generate_rate(arch: dict, device: str, batch: int, prompt: int, new: int) -> dict:
    """Generated tokens/s of one `generate` call: `batch` prompts, exactly `new` tokens each."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**arch)).to(device, torch.bfloat16).eval()
    ids = torch.randint(0, arch["vocab_size"], (batch, prompt), device=device)
    kwargs = dict(max_new_tokens=new, min_new_tokens=new, do_sample=True, pad_token_id=0)
    with torch.no_grad():
        model.generate(ids[:, :8], max_new_tokens=4, do_sample=True, pad_token_id=0)  # warm-up
        _sync(device)
        start = time.perf_counter()
        out = model.generate(ids, **kwargs)
        _sync(device)
    wall = time.perf_counter() - start
    made = (out.shape[1] - prompt) * batch
    return dict(batch=batch, prompt=prompt, new=new, wall_s=wall, tokens_per_s=made / wall)


def probe(args: argparse.Namespace) -> dict:
    import torch

    arch = _arch(args.model)
    device = args.device
    cuda = device.startswith("cuda")
    info = {
        "model": args.model,
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if cuda else platform.processor(),
        "torch": torch.__version__,
    }
    train = train_rate(arch, device, args.batch, args.seq_len, args.steps)
    if cuda:
        torch.cuda.empty_cache()
    gen = generate_rate(arch, device, args.gen_batch, args.prompt, args.new)
    return info | {
        "train": train,
        "generate": gen,
        # What bench.scale_estimate reads: per device, HF generate (vLLM's lower bound).
        "train_tokens_per_s": train["tokens_per_s"],
        "decode_tokens_per_s": gen["tokens_per_s"],
        "decode_engine": "transformers generate (a lower bound of vLLM's rate)",
    }


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qwen2.5-1.5b", help="a bench.scale_estimate preset, or tiny")
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=8, help="training sequences per step")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--steps", type=int, default=5, help="timed training steps")
    p.add_argument("--gen-batch", type=int, default=256)
    p.add_argument("--prompt", type=int, default=150)
    p.add_argument("--new", type=int, default=256)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    out = probe(args)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
