"""The embedded base policy: a tiny Llama made from scratch, cached by the hash of its recipe.

It owns the character-level tokenizer, the pretraining text (prompt + reference solution + eos
on fresh domain questions, never one of the frozen eval suite's), the short pretraining loop,
and the Hugging Face checkpoint folder `<out_root>/bootstrap-<hash>` that every later stage
(vLLM, TRL, `from_pretrained`) loads like any other local model.

How it departs from the textbook: pretraining here is deliberately *short*, and optionally
*label-smoothed*. The point is a base that has learnt the format and some arithmetic but is
weak when sampled at temperature 1 (pass@1 far below pass@k and below its own greedy accuracy),
so the flywheel has something to improve from its own verified samples. Label smoothing
plays the part of a real base model's noisy pretraining corpus: the policy puts some mass on
wrong digits, and rejection sampling + SFT on its verified samples is what removes it.
(Measured: an unsmoothed short base samples almost as well as it decodes greedily, and
self-training on its own correct samples, which are its reference solutions again, barely
moves it.) It is a plain torch loop rather than a Trainer: a few hundred steps on fresh
synthetic batches, no dataset to materialise. The checkpoint folder is written atomically as a
stage (`tasks.store.write_stage`); a folder whose manifest exists is returned without work.

Run in its own process: `python -m tasks.bootstrap request.json result.json` (see
`tasks.subproc`), on a `tasks.requests.BootstrapRequest` built from the config.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tasks.domains import DOMAINS, eval_suite
from tasks.progress import loss_bar
from tasks.records import stable_hash
from tasks.requests import BootstrapRequest, JudgeBootstrapRequest, from_json
from tasks.store import read_manifest, write_json, write_stage
from tasks.subproc import worker_main
from tasks.threads import set_torch_threads

# Bump when the tokenizer, the text format or the training loop changes what a recipe produces.
FORMAT_VERSION = 1
DEFAULT_PROMPT = "Q: {question}\n"
DEFAULT_SUITE_SIZE = 512  # the exclusion set when the caller passes none

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]
# Added as ordinary (non-special) tokens: `skip_special_tokens=True` decoding keeps them, and
# each is one token, so the format is cheap to learn and cheap to emit.
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]
# One token per character. Letters and a little punctuation let prompts carry short words.
CHARACTERS = (
    "0123456789+-*/()=?:.,!' \n" + "abcdefghijklmnopqrstuvwxyz" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer; `<s>` is prepended to every encoded text, decoding is exact."""
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + list(dict.fromkeys(CHARACTERS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")  # every character alone
    tok.decoder = decoders.Fuse()  # and glued back without spaces
    bos = vocab["<s>"]
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    ft = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    ft.add_tokens(TAG_TOKENS)
    return ft


def pretrain_text(question: str, solution: str, prompt_template: str = DEFAULT_PROMPT) -> str:
    """One pretraining document (eos is appended at tokenization)."""
    return prompt_template.format(question=question) + solution


def bootstrap_dir(out_root: Path, recipe: dict[str, Any]) -> Path:
    return Path(out_root) / f"bootstrap-{stable_hash('bootstrap', FORMAT_VERSION, recipe)}"


def _lr_at(step: int, total: int, peak: float) -> float:
    """Linear warmup over 5% of the steps, then cosine to 10% of the peak."""
    warmup = max(1, total // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _batch(
    texts: list[str], tokenizer: PreTrainedTokenizerFast, max_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids + eos; labels are the ids with padding masked out of the loss."""
    rows = [tokenizer(t)["input_ids"][: max_len - 1] + [tokenizer.eos_token_id] for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask, ids.masked_fill(mask == 0, -100)


def new_llama(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int,
    intermediate_size: int,
    num_layers: int,
    num_heads: int,
    max_position: int,
) -> LlamaForCausalLM:
    """A randomly initialised Llama over `tokenizer` (weights from torch's current seed)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def pretrain(
    model: LlamaForCausalLM,
    next_batch: Callable[[], tuple[torch.Tensor, ...]],
    *,
    steps: int,
    learning_rate: float,
    label_smoothing: float,
    label: str,
    progress: bool,
) -> list[float]:
    """The short from-scratch loop: AdamW, warmup + cosine, clipped gradients, next-token loss
    on the labels `next_batch` gives (-100 masks a position), a weighted mean over positions
    when it gives a fourth tensor of per-position weights. Returns the loss per step."""
    optim = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    losses: list[float] = []
    model.train()
    with loss_bar(label, progress) as bar:
        task = bar.add_task(label, total=steps, loss="-")
        for step in range(steps):
            ids, mask, labels, *weights = next_batch()
            for group in optim.param_groups:
                group["lr"] = _lr_at(step, steps, learning_rate)
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = F.cross_entropy(  # next-token loss, padding masked
                logits[:, :-1].flatten(0, 1),
                labels[:, 1:].flatten(),
                ignore_index=-100,
                label_smoothing=label_smoothing,
                reduction="none" if weights else "mean",
            )
            if weights:
                w = weights[0][:, 1:].flatten()
                loss = (loss * w).sum() / w.sum()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            losses.append(loss.item())
            bar.update(task, advance=1, loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    return losses


def save_checkpoint(
    folder: Path,
    stage: str,
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    recipe: dict[str, Any],
    losses: list[float],
    started: float,
) -> None:
    """Write the Hugging Face checkpoint folder atomically, with its recipe and loss summary."""
    n_params = sum(p.numel() for p in model.parameters())
    window = max(1, min(20, len(losses) // 10))
    with write_stage(folder, stage) as (tmp, outputs):
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ).save_pretrained(tmp)
        write_json({"format_version": FORMAT_VERSION, **recipe}, tmp / "recipe.json")
        outputs.update(
            parameters=n_params,
            first_loss=sum(losses[:window]) / window if losses else None,
            final_loss=sum(losses[-window:]) / window if losses else None,
            seconds=round(time.time() - started, 2),
            recipe=recipe,
            # Not in the recipe (a rerun on a busier machine may pick another count and still
            # reuse this cache), but recorded: on CPU the weights depend on it (`tasks.threads`).
            torch_threads=torch.get_num_threads(),
        )


def bootstrap(
    out_root: Path,
    *,
    hidden_size: int,
    intermediate_size: int,
    num_layers: int,
    num_heads: int,
    max_position: int,
    pretrain_steps: int,
    batch_size: int,
    learning_rate: float,
    max_difficulty: int,
    seed: int,
    label_smoothing: float = 0.0,
    prompt_template: str = DEFAULT_PROMPT,
    domain: str = "arith",
    exclude: Iterable[str] | None = None,
    progress: bool = True,
) -> Path:
    """Make (or find cached) the tiny base policy; return its Hugging Face checkpoint folder.

    `exclude` holds the questions pretraining must never show (the frozen eval suite's); None
    means the default suite of `DEFAULT_SUITE_SIZE` items of `domain`. `label_smoothing` is the
    mass spread over the vocabulary in the pretraining loss (0 = plain next-token loss).
    """
    dom = DOMAINS[domain]
    if not 1 <= max_difficulty <= dom.max_difficulty:
        raise ValueError(f"max_difficulty must be in 1..{dom.max_difficulty}, got {max_difficulty}")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads")
    if exclude is None:
        exclude = {s.question for s in eval_suite(dom, DEFAULT_SUITE_SIZE)}
    excluded = set(exclude)
    recipe = {
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "max_position": max_position,
        "pretrain_steps": pretrain_steps,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "max_difficulty": max_difficulty,
        "seed": seed,
        "label_smoothing": label_smoothing,
        "prompt_template": prompt_template,
        "domain": domain,
        "exclude": stable_hash(sorted(excluded)),
    }
    folder = bootstrap_dir(out_root, recipe)
    if read_manifest(folder) is not None:
        return folder

    started = time.time()
    torch.manual_seed(seed)
    rng = random.Random(f"bootstrap/{seed}")
    tokenizer = build_tokenizer()
    model = new_llama(
        tokenizer, hidden_size, intermediate_size, num_layers, num_heads, max_position
    )

    def document() -> str:
        while True:  # fresh questions, repeats allowed, suite items never
            seed_ = dom.generate(rng, rng.randint(1, max_difficulty))
            if seed_.question not in excluded:
                return pretrain_text(seed_.question, dom.solution(seed_.question), prompt_template)

    losses = pretrain(
        model,
        lambda: _batch([document() for _ in range(batch_size)], tokenizer, max_position),
        steps=pretrain_steps,
        learning_rate=learning_rate,
        label_smoothing=label_smoothing,
        label="bootstrap pretraining",
        progress=progress,
    )
    save_checkpoint(folder, "bootstrap", model, tokenizer, recipe, losses, started)
    return folder


def request_args(request: BootstrapRequest | JudgeBootstrapRequest) -> dict[str, Any]:
    """A bootstrap request as its function's keyword arguments, field for field (the folder and
    the excluded questions travel as a string and a list). The thread count is the worker
    process's (`set_torch_threads`), not the recipe's."""
    args = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}
    del args["cpu_threads"]
    return args | {"out_root": Path(request.out_root), "exclude": set(request.exclude)}


def main(request: dict) -> dict:
    """Worker entry: `bootstrap` on a `BootstrapRequest`, in its own process."""
    req = from_json(BootstrapRequest, request)
    set_torch_threads(req.cpu_threads, "bootstrap.cpu_threads")
    return {"path": str(bootstrap(**request_args(req)))}


if __name__ == "__main__":
    worker_main(main)
