"""`flywheel export`: one generation's curated data as a dataset that TRL's trainers and the
Hugging Face Hub take as is.

The folder it writes holds the same rows twice and a card:

- the `datasets` dataset (`save_to_disk`: `datasets.load_from_disk(OUT)` gives it back),
- `train.jsonl`, the file the card's `configs` name, so a Hub repository pushed from this
  folder serves it (locally: `datasets.load_dataset("json", data_files=OUT/train.jsonl)`;
  `load_dataset(OUT)` refuses a `save_to_disk` folder),
- `README.md`, a dataset card (YAML front matter as the Hub reads it: license from
  `export.license`, size, task; a body with the seeds, the models, the rewards, the counts per
  outcome and reason, decontamination and the hashes that tie the rows to the generation).

Formats (TRL's dataset formats):

- `messages`: conversational language modelling. An optional system turn (the configured
  `model.system_prompt`, only where the flywheel used a chat template), the seed's question as
  the user turn, the completion as the assistant turn: the tokenizer's chat template renders the
  prompt exactly as generation and training did (`tasks.prompts.render_prompts`). A flywheel
  with a plain-text prompt template trains on `prompt-completion` as it stands.
- `prompt-completion`: standard `prompt` / `completion` strings, the prompt rendered as the
  train stage trains on it (`Sample.prompt`).
- `preference`: `prompt`, `chosen`, `rejected` (`tasks.preference`): conversational under a
  chat template, else standard strings, as above.

Which rows: the generation's training set (`curate/accepted.parquet`: accepted, deduplicated,
capped per seed), or with `everything` every sample with its verdict. Each row also carries its
ids, the seed's question and gold answer, its generator and its verdict.

The folder is written beside its final name and renamed into place last; an existing folder
that is not empty is refused.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks import store
from tasks.config_export import ExportFormat as Format
from tasks.outputs import Generation, generation_number, load_generation
from tasks.preference import preference_pairs
from tasks.records import Sample, Verdict, from_rows

DATA_FILE = "train.jsonl"
CARD_FILE = "README.md"


class ExportError(ValueError):
    """An export that cannot be made; the message names the generation, stage or folder."""


@dataclass(frozen=True)
class ExportRequest:
    """What one export needs, built from the config by the command line."""

    flywheel_dir: Path
    name: str  # the flywheel's
    out: Path
    fmt: Format
    generation: int | None  # None: the latest generation whose curate stage completed
    everything: bool  # every sample and its verdict, not only the training set
    chat_template: bool
    system_prompt: str | None
    domain: str
    rewards: tuple[str, ...]
    judge: dict[str, Any] | None  # the judge's settings, where it is one of the rewards
    license: str
    pairs_per_seed: int
    pair_seed: int


@dataclass(frozen=True)
class ExportResult:
    out: Path
    generation: int
    fmt: Format
    rows: int
    counts: dict[str, int]  # exported rows per outcome and per outcome:reason


def curated_generation(flywheel_dir: Path, generation: int | None) -> Generation:
    """The generation to export: the given one, or the latest with a completed curate stage;
    an error names a generation that does not exist or whose curation has not completed."""
    folders = sorted(Path(flywheel_dir).glob("gen-[0-9]*"), key=generation_number)
    if generation is None:
        done = [f for f in folders if store.read_manifest(f / "curate") is not None]
        if not done:
            raise ExportError(f"{flywheel_dir}: no generation has a completed curate stage yet")
        return load_generation(done[-1])
    folder = store.gen_dir(flywheel_dir, generation)
    if not folder.is_dir():
        known = [f.name for f in folders if generation_number(f) > 0]
        raise ExportError(f"{folder}: no such generation (there are: {known or 'none'})")
    gen = load_generation(folder)
    if gen.curate is None:
        raise ExportError(
            f"{folder / 'curate'}: curation has not completed for generation {generation}; "
            "run (or resume) the flywheel first"
        )
    return gen


def messages(
    question: str, completion: str | None, chat_template: bool, system_prompt: str | None
) -> list[dict[str, str]]:
    """A sample as chat turns that a chat template renders as the policy saw it: the system
    prompt where the flywheel used one, the question, then the completion (if given)."""
    turns = (
        [{"role": "system", "content": system_prompt}] if chat_template and system_prompt else []
    )
    turns.append({"role": "user", "content": question})
    if completion is not None:
        turns.append({"role": "assistant", "content": completion})
    return turns


def sample_rows(gen: Generation, everything: bool) -> list[dict[str, Any]]:
    """The samples to export with their question and verdict: the training set, or every
    sample (`everything`), in the order the stages wrote them."""
    folder = gen.folder
    questions = {s["id"]: s["question"] for s in _read(folder, "seeds", "seeds.parquet")}
    verdicts = {v["sample_id"]: v for v in _read(folder, "curate", "verdicts.parquet")}
    source = ("generate", "samples.parquet") if everything else ("curate", "accepted.parquet")
    samples = from_rows(Sample, _read(folder, *source))
    rows = []
    for s in samples:
        v = verdicts.get(s.id)
        if v is None:
            raise ExportError(f"{folder / 'curate' / 'verdicts.parquet'}: no verdict for {s.id}")
        rows.append(
            {
                **asdict(s),
                "question": questions[s.seed_id],
                "outcome": v["outcome"],
                "reason": v["reason"],
                "kept": bool(v["kept"]),
                "generation": gen.number,
            }
        )
    return rows


META = (
    "id", "seed_id", "question", "answer", "difficulty", "model", "template", "outcome",
    "reason", "kept", "num_tokens", "finish_reason", "generation",
)  # fmt: skip
"""The columns every sample row carries beside its training columns."""


def format_rows(rows: list[dict], fmt: Format, chat_template: bool, system: str | None) -> list:
    """Sample rows in a training format (`messages` or `prompt-completion`), metadata after."""
    out = []
    for r in rows:
        if fmt is Format.messages:
            head = {"messages": messages(r["question"], r["completion"], chat_template, system)}
        else:
            head = {"prompt": r["prompt"], "completion": r["completion"]}
        out.append(head | {k: r[k] for k in META})
    return out


def pair_rows(gen: Generation, request: ExportRequest) -> list[dict[str, Any]]:
    """The generation's preference pairs in TRL's preference format, with their provenance."""
    folder = gen.folder
    seeds = {s["id"]: s for s in _read(folder, "seeds", "seeds.parquet")}
    verdicts = {
        v["sample_id"]: Verdict(v["outcome"], v["reason"])
        for v in _read(folder, "curate", "verdicts.parquet")
    }
    samples = from_rows(Sample, _read(folder, "generate", "samples.parquet"))
    pairs = preference_pairs(samples, verdicts, request.pairs_per_seed, request.pair_seed)
    rows = []
    for p in pairs:
        seed = seeds[p.seed_id]
        if request.chat_template:
            prompt = messages(seed["question"], None, True, request.system_prompt)
            chosen = [{"role": "assistant", "content": p.chosen}]
            rejected = [{"role": "assistant", "content": p.rejected}]
        else:
            prompt, chosen, rejected = p.prompt, p.chosen, p.rejected
        rows.append(
            {
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "seed_id": p.seed_id,
                "question": seed["question"],
                "answer": seed["answer"],
                "chosen_id": p.chosen_id,
                "rejected_id": p.rejected_id,
                "chosen_reason": p.chosen_reason,
                "rejected_reason": p.rejected_reason,
                "generation": gen.number,
            }
        )
    return rows


def export(request: ExportRequest) -> ExportResult:
    """Write one generation's data (see the module's docstring) to `request.out`."""
    import datasets

    out = Path(request.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out}: already exists and is not empty; export into a new folder")
    if request.everything and request.fmt is Format.preference:
        raise ExportError("--all exports samples; preference pairs are drawn from all already")
    gen = curated_generation(request.flywheel_dir, request.generation)
    if request.fmt is Format.preference:
        rows = pair_rows(gen, request)
        counts = Counter(f"rejected:{r['rejected_reason']}" for r in rows)
        counts["pairs"] = len(rows)
        counts["seeds"] = len({r["seed_id"] for r in rows})
    else:
        samples = sample_rows(gen, request.everything)
        rows = format_rows(samples, request.fmt, request.chat_template, request.system_prompt)
        counts = Counter(r["outcome"] for r in samples)
        counts.update(f"{r['outcome']}:{r['reason']}" for r in samples)
    if not rows:
        what = "preference pairs (no seed has both an accepted and a rejected sample)"
        raise ExportError(
            f"{gen.folder}: no {what if request.fmt is Format.preference else 'samples'} to export"
        )
    result = ExportResult(out, gen.number, request.fmt, len(rows), dict(sorted(counts.items())))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{uuid.uuid4().hex[:8]}"
    try:
        ds = datasets.Dataset.from_list(rows)
        ds.save_to_disk(str(tmp))
        ds.to_json(str(tmp / DATA_FILE), lines=True, force_ascii=False)
        dataset_card(gen, request, result, ds.features).save(tmp / CARD_FILE)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _read(folder: Path, stage: str, name: str) -> list[dict]:
    path = folder / stage / name
    if not path.is_file():
        raise ExportError(f"{path}: missing from a completed {stage} stage")
    return store.read_parquet(path)


def size_category(n: int) -> str:
    """The Hub's `size_categories` bucket of `n` rows."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M" if n < 1_000_000 else "1M<n<10M"


DESCRIPTIONS = {
    Format.messages: "chat turns (`messages`: system?, user, assistant), TRL's conversational "
    "language-modelling format",
    Format.prompt_completion: "`prompt` / `completion` strings, TRL's standard prompt-completion "
    "format; the prompt is rendered as the flywheel's train stage trains on it",
    Format.preference: "`prompt` / `chosen` / `rejected`, TRL's preference format; chosen is an "
    "accepted sample, rejected a rejected sample of the same seed",
}


def _table(counts: dict[str, Any], head: tuple[str, str]) -> list[str]:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    return lines + [f"| `{k}` | {v} |" for k, v in counts.items()]


def dataset_card(gen: Generation, request: ExportRequest, result: ExportResult, features: Any):
    """The export's dataset card (`huggingface_hub.DatasetCard`): Hub metadata, then where
    the rows come from and what was done to them."""
    from huggingface_hub import DatasetCard, DatasetCardData

    g, seeds, generated, cur = gen.number, gen.seeds, gen.generate, gen.curate
    samples = request.fmt is not Format.preference
    what = "every sample with its verdict" if request.everything else "the training set"
    if request.fmt is Format.preference:
        what = "preference pairs"
    data = DatasetCardData(
        license=request.license,
        pretty_name=f"{request.name} generation {g}",
        size_categories=[size_category(result.rows)],
        task_categories=["text-generation"],
        tags=["flywheel", "rejection-sampling", "synthetic", request.domain, request.fmt.value],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILE}]}],
    )
    version = _policy_version(request.flywheel_dir, g)
    lines = [
        f"# {request.name}: generation {g}, {what}",
        "",
        f"{result.rows} rows from generation {g} of the flywheel `{request.name}` "
        f"({request.domain} domain): {DESCRIPTIONS[request.fmt]}.",
        "",
        "```python",
        "import datasets",
        'ds = datasets.load_from_disk("<this folder>")',
        f'# or: datasets.load_dataset("json", data_files="<this folder>/{DATA_FILE}")',
        "```",
        "",
        f"Columns: {', '.join(f'`{c}`' for c in features)}.",
        "",
    ]
    if request.fmt is not Format.prompt_completion and not request.chat_template:
        lines += [
            "The flywheel used a plain-text prompt template (no chat template): chat turns "
            "need a model with a chat template, and render the prompt differently from how "
            "the policy was trained (`prompt-completion` reproduces it).",
            "",
        ]
    lines += ["## Source", ""]
    if seeds is not None:
        origins = ", ".join(f"{k} {v}" for k, v in sorted(seeds.origins.items())) or "-"
        lines += [f"- Seeds: {seeds.count} (by source: {origins}), hash `{seeds.hash}`."]
        if seeds.source:
            lines += [f"- Seed source: `{seeds.source}`."]
    if generated is not None:
        lines += [
            f"- Policy: `{generated.model}` "
            + (f"(registered model version {version})" if version else "(the base model)")
            + f"; sampling {generated.params}.",
            f"- Candidates: {generated.samples}, hash `{generated.hash}`.",
        ]
        for s in generated.sources:
            lines += [f"  - `{s['model']}`, template `{s['template']}`: {s['rows']} samples"]
    lines += ["", "## Curation", "", f"- Rewards: {', '.join(request.rewards)}."]
    if request.judge is not None:
        judged = ", ".join(f"{k} `{v}`" for k, v in request.judge.items())
        lines += [f"- Judge: {judged}."]
        qc = cur.judge or {}
        figures = {k: qc.get(k) for k in ("rubric_version", "balanced_accuracy", "kappa")}
        lines += [f"- Judge against the rules: {figures}."]
    lines += [
        f"- Accepted {cur.accepted} of {generated.samples if generated else '?'} after "
        f"dedup and the per-seed cap (accept rate {cur.accept_rate:.3f}); hash `{cur.hash}`.",
        "",
        "This export:",
        "",
        *_table(result.counts, ("outcome:reason" if samples else "pairs", "rows")),
        "",
        "The whole generation's curation:",
        "",
        *_table(cur.counts, ("count", "samples")),
        "",
        "## Decontamination",
        "",
    ]
    if seeds is not None and (seeds.decontaminated or seeds.duplicates):
        lines += [
            "Seeds against the frozen eval suite (normalised exact match and n-gram "
            "containment), then deduplicated (exact and MinHash); removed:",
            "",
            *_table(
                {f"decontaminated.{k}": v for k, v in seeds.decontaminated.items()}
                | {f"duplicates.{k}": v for k, v in seeds.duplicates.items()},
                ("check", "seeds"),
            ),
        ]
    else:
        lines += ["The seeds manifest records no decontamination for this generation."]
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def _policy_version(flywheel_dir: Path, generation: int) -> str | None:
    """The registered version of the model that sampled generation `generation`: the champion
    the previous generation's gate left (None: the base model)."""
    prev = load_generation(store.gen_dir(flywheel_dir, generation - 1))
    return prev.gate.champion.version if prev.gate is not None else None
