"""The embedded default judge: a tiny Llama made from scratch to emit the rubric's verdict line.

Same family, tokenizer and loop as the bootstrap policy (`tasks.bootstrap`): a character-level
Llama trained for a few hundred steps on fresh synthetic text and cached by the hash of its
recipe (the rubric's text included, so a new rubric version makes a new judge). Each training
document is one rendered judge prompt, exactly as `tasks.judge.render` builds it at judging
time (per-document random nonce, sanitised and capped candidate), followed by what the judge
should write: notes that copy the candidate's reasoning and answer out, a check word (`same` or
`differ`: does the last step's result match the answer?) and the verdict line the rule verifier
implies (`tasks.judge_data.judge_notes`). The loss covers only what the judge writes, with the
check word and verdict weighted up: the prompt is given, and spending the tiny model's capacity
on predicting rubric text would buy nothing.

With `policy_samples` > 0 it also learns from what the policy actually writes: the base policy is
sampled (Hugging Face `generate`, at the policy's own sampling settings) on fresh training
questions from the same source as the synthetic candidates, each completion is labelled by the
rule verifier, and every training batch takes `POLICY_SHARE` of its documents from that pool,
accepts and rejects drawn equally often (`tasks.judge_data.balanced_draw`). Synthetic
corruptions alone left the judge agreeing with the rules 0.42 on a real policy's candidates,
where the rules accepted under 5 %: the corruptions are not the errors the policy makes. The
policy's identity (a fingerprint of its files), the sample count and the sampling settings join
the recipe, so a new base policy makes a new judge. With 0 the recipe, its hash and its training
stream are exactly those of the synthetic-only judge.

Its quality is measured, not assumed: `tests/integration/test_judge_model.py` runs it through
the vLLM CPU engine on held-out questions and reports its agreement with the rules.

Run in its own process: `python -m tasks.judge_bootstrap request.json result.json`, on a
`tasks.requests.JudgeBootstrapRequest` built from the config.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import torch

from tasks.bootstrap import (
    DEFAULT_SUITE_SIZE,
    FORMAT_VERSION,
    build_tokenizer,
    new_llama,
    pretrain,
    request_args,
    save_checkpoint,
)
from tasks.domains import DOMAINS, eval_suite
from tasks.judge import load_rubric, make_nonce, render, verdict_line
from tasks.judge_data import (
    NOTES_VERSION,
    Candidate,
    balanced_draw,
    fresh_candidates,
    judge_notes,
    policy_candidates,
    training_seeds,
)
from tasks.records import Seed, stable_hash
from tasks.requests import (
    EngineSpec,
    JudgeBootstrapRequest,
    PolicySampling,
    SamplingSpec,
    from_json,
)
from tasks.store import read_manifest
from tasks.subproc import worker_main
from tasks.threads import set_torch_threads

# Wrong final answers are over-represented in training: when the last step and the answer
# almost always agree, the tiny model learns to copy the answer twice instead of reading the
# last step, and its notes stop telling anything apart (measured).
TRAIN_WEIGHTS = {"wrong_answer": 3.0}
# The decision (check word and verdict line) is a few tokens after notes several times longer;
# weighting it keeps the notes from drowning out the decision they exist for.
VERDICT_WEIGHT = 8.0
# Share of each training batch drawn from the policy's own samples when there are any: the
# synthetic half keeps every corruption class and the notes' copy skill in view.
POLICY_SHARE = 0.5


def _judge_batch(
    prompts: list[str], targets: list[tuple[str, str]], tokenizer, max_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded prompt + notes + decision + eos, from (notes, decision) targets; labels on
    everything after the prompt, weighted 1 on the notes and VERDICT_WEIGHT on the decision."""
    rows, spans = [], []
    for p, target in zip(prompts, targets, strict=True):
        row, span = _judge_row(p, target, tokenizer)
        if len(row) > max_len:
            raise ValueError(
                f"a judge training document is {len(row)} tokens, over "
                f"max_position={max_len}; lower max_candidate_chars or raise max_position"
            )
        rows.append(row)
        spans.append(span)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    weights = torch.zeros((len(rows), width))
    for i, (r, (s, v)) in enumerate(zip(rows, spans, strict=True)):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
        labels[i, s : len(r)] = ids[i, s : len(r)]
        weights[i, s:v] = 1.0
        weights[i, v : len(r)] = VERDICT_WEIGHT
    return ids, mask, labels, weights


def _judge_row(
    prompt: str, target: tuple[str, str], tokenizer
) -> tuple[list[int], tuple[int, int]]:
    """One document's ids (prompt with BOS, notes, decision, eos) and where its notes span."""
    notes, decision = target
    head = tokenizer(prompt)["input_ids"]  # with BOS
    mid = tokenizer(notes + "\n", add_special_tokens=False)["input_ids"]
    tail = tokenizer(decision, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return head + mid + tail, (len(head), len(head) + len(mid))


def _target(rb, c: Candidate) -> tuple[str, str]:
    """What the judge should write for `c`: (notes, check word + verdict line)."""
    copy, check = judge_notes(c.completion)
    verdict = verdict_line(rb, c.accept)
    return copy, f"{check}\n{verdict}" if check else verdict


def policy_fingerprint(path: str | Path) -> str:
    """The policy's identity for the judge's cache key: its files' hashes where its folder has a
    manifest (every checkpoint this project writes), else its config and weight files' names
    and sizes (hashing a large external checkpoint whole would cost minutes)."""
    path = Path(path)
    man = read_manifest(path)
    if man is not None:
        return stable_hash("manifest", sorted((k, v["sha256"]) for k, v in man.files.items()))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"policy: {path} is not a Hugging Face checkpoint folder")
    weights = sorted(
        (p.name, p.stat().st_size)
        for p in path.iterdir()
        if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")
    )
    return stable_hash("files", json.loads((path / "config.json").read_text()), weights)


def sample_policy(
    policy: str,
    seeds: list[Seed],
    sampling: PolicySampling,
    seed: int,
    progress: bool,
) -> list[str]:
    """One completion of the policy per seed, by the generation worker's HF backend and prompt
    rendering (one code path: the pool is sampled the way curation's candidates are)."""
    from transformers import AutoTokenizer

    from tasks.backends import generate_hf
    from tasks.prompts import render_prompts

    prompts = render_prompts(
        AutoTokenizer.from_pretrained(policy),
        [s.question for s in seeds],
        sampling.prompt_template,
        sampling.chat_template,
        sampling.system_prompt,
    )
    engine = EngineSpec(
        backend="hf",
        dtype=sampling.dtype,
        gpu_memory_utilization=0.0,  # vLLM's; unused by HF generate
        max_model_len=sampling.max_model_len,
        hf_batch_size=sampling.hf_batch_size,
        enforce_eager=True,  # vLLM's; unused by HF generate
        base_url=None,
        api_key_env=None,
        cpu_threads=None,  # this worker set its threads at start (`main`)
        multiprocessing=None,  # vLLM's; unused by HF generate
        tensor_parallel_size=1,  # vLLM's and the ray backend's; unused by HF generate
        ray_address=None,
        replicas=1,
        ray_num_cpus=1.0,
        ray_num_gpus=0.0,
        ray_batch_size=1,
        ray_timeout_s=1.0,
    )
    one = SamplingSpec(
        n=1,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_tokens,
        seed=seed,
    )
    out = generate_hf(policy, prompts, engine, one, progress=progress)
    return [c[0].text for c in out]


def policy_pool(
    policy: str,
    size: int,
    sampling: PolicySampling,
    *,
    levels: list[int],
    excluded: set[str],
    domain: str,
    seed: int,
    progress: bool,
) -> list[Candidate]:
    """`size` rule-labelled policy samples on fresh training questions (never `excluded`)."""
    seeds = training_seeds(random.Random(f"judge-policy/{seed}"), size, levels, excluded, domain)
    return policy_candidates(seeds, sample_policy(policy, seeds, sampling, seed, progress), domain)


def _fitting(
    cands: list[Candidate], rb, tokenizer, max_chars: int, max_len: int
) -> list[Candidate]:
    """The candidates whose training document fits `max_len` tokens (a policy sample can be
    longer than any synthetic one: it may ramble until `max_tokens`)."""
    probe = "x" * 6  # nonces have a fixed length, so any one measures the document
    return [
        c
        for c in cands
        if len(
            _judge_row(
                render(rb, c.question, c.completion, probe, max_chars), _target(rb, c), tokenizer
            )[0]
        )
        <= max_len
    ]


def judge_dir(out_root: Path, recipe: dict) -> Path:
    return Path(out_root) / f"judge-{stable_hash('judge', FORMAT_VERSION, recipe)}"


def bootstrap_judge(
    out_root: Path,
    *,
    rubric: str = "arith_v1",
    hidden_size: int = 128,
    intermediate_size: int = 256,
    num_layers: int = 2,
    num_heads: int = 2,
    max_position: int = 384,
    steps: int = 1200,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    max_difficulty: int = 3,
    max_candidate_chars: int = 160,
    seed: int = 0,
    domain: str = "arith",
    exclude: Iterable[str] | None = None,
    policy: str | None = None,
    policy_samples: int = 0,
    policy_sampling: PolicySampling | None = None,
    progress: bool = True,
) -> Path:
    """Make (or find cached) the tiny judge; return its Hugging Face checkpoint folder.

    `exclude`: questions training must never show (default: the frozen eval suite's), so the
    judge is measured on questions it has not seen. `policy_samples` > 0: that many samples of
    the checkpoint `policy`, drawn with `policy_sampling`, join the training mix; 0 is the
    synthetic-only recipe. The flow calls it through its worker on a `JudgeBootstrapRequest`,
    which sets every argument; the defaults here are the embedded judge's shape.
    """
    rb = load_rubric(rubric)
    dom = DOMAINS[domain]
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads")
    if exclude is None:
        exclude = {s.question for s in eval_suite(dom, DEFAULT_SUITE_SIZE)}
    excluded = set(exclude)
    recipe = {
        "rubric": rb.name,
        "rubric_version": rb.version,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "max_position": max_position,
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "max_difficulty": max_difficulty,
        "max_candidate_chars": max_candidate_chars,
        "seed": seed,
        "domain": domain,
        "exclude": stable_hash(sorted(excluded)),
        "train_weights": TRAIN_WEIGHTS,
        "verdict_weight": VERDICT_WEIGHT,
        "notes": NOTES_VERSION,
    }
    if policy_samples < 0:
        raise ValueError(f"policy_samples must be >= 0, got {policy_samples}")
    if policy_samples:
        if policy is None:
            raise ValueError("policy_samples > 0 needs the policy checkpoint (`policy`)")
        if policy_sampling is None:
            raise ValueError("policy_samples > 0 needs the policy's sampling (`policy_sampling`)")
        recipe |= {
            "policy": policy_fingerprint(policy),
            "policy_samples": policy_samples,
            "policy_sampling": asdict(policy_sampling),
            "policy_share": POLICY_SHARE,
        }
    folder = judge_dir(out_root, recipe)
    if read_manifest(folder) is not None:
        return folder

    started = time.time()
    levels = list(range(1, max_difficulty + 1))
    tokenizer = build_tokenizer()
    pool: list[Candidate] = []
    if policy_samples:
        assert policy is not None and policy_sampling is not None
        sampled = policy_pool(
            policy,
            policy_samples,
            policy_sampling,
            levels=levels,
            excluded=excluded,
            domain=domain,
            seed=seed,
            progress=progress,
        )
        pool = _fitting(sampled, rb, tokenizer, max_candidate_chars, max_position)
        print(
            f"judge: {len(sampled)} policy samples, rules accept "
            f"{sum(c.accept for c in sampled)}; {len(pool)} fit max_position={max_position}",
            flush=True,
        )
    torch.manual_seed(seed)
    rng = random.Random(f"judge-bootstrap/{seed}")
    model = new_llama(
        tokenizer, hidden_size, intermediate_size, num_layers, num_heads, max_position
    )
    from_policy = round(batch_size * POLICY_SHARE) if pool else 0

    def next_batch():
        cands = fresh_candidates(
            rng, batch_size - from_policy, levels, excluded, domain, TRAIN_WEIGHTS
        )
        if from_policy:
            cands += balanced_draw(rng, pool, from_policy)
        prompts = [
            render(rb, c.question, c.completion, make_nonce(rng), max_candidate_chars)
            for c in cands
        ]
        targets = [_target(rb, c) for c in cands]
        return _judge_batch(prompts, targets, tokenizer, max_position)

    losses = pretrain(
        model,
        next_batch,
        steps=steps,
        learning_rate=learning_rate,
        label_smoothing=0.0,
        label="judge pretraining",
        progress=progress,
    )
    save_checkpoint(folder, "judge-bootstrap", model, tokenizer, recipe, losses, started)
    return folder


def main(request: dict) -> dict:
    """Worker entry: `bootstrap_judge` on a `JudgeBootstrapRequest`, in its own process."""
    req = from_json(JudgeBootstrapRequest, request)
    set_torch_threads(req.cpu_threads, "bootstrap.cpu_threads")
    return {"path": str(bootstrap_judge(**request_args(req)))}


if __name__ == "__main__":
    worker_main(main)
