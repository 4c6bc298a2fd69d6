"""`flywheel export`: a generation's curated samples as a dataset with a card, in TRL's formats;
the rows, the card and the errors that name what is missing.

The generation is written by the stages that run without a model (suite, seeds, curate); its
generate folder holds hand-made samples of the real seeds: right, wrong, malformed, truncated.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
from typer.testing import CliRunner

from tasks import store
from tasks.config import FlywheelConfig
from tasks.config_export import ExportFormat
from tasks.export import CARD_FILE, DATA_FILE, ExportError, ExportRequest, export, messages
from tasks.prompts import render_prompts
from tasks.records import Sample, from_rows, to_rows
from tasks.stages import curate_stage, seeds_stage, suite_stage
from tasks.stages.common import read_seeds
from tests.conftest import build_tiny_tokenizer

SEEDS = 6


def completions(question: str, answer: str) -> list[tuple[str, str]]:
    """(completion, finish reason) per sample of one seed: two right (different reasoning),
    one wrong, one without tags, one cut at the token budget."""
    wrong = str(int(answer) + 1)
    return [
        (f"<think>{question}={answer}</think><answer>{answer}</answer>", "stop"),
        (f"<think>so it is {answer}</think><answer>{answer}</answer>", "stop"),
        (f"<think>{question}={wrong}</think><answer>{wrong}</answer>", "stop"),
        (answer, "stop"),
        (f"<think>{question}={answer}", "length"),
    ]


def curated_flywheel(runs_dir: Path, seeds: int = SEEDS, **config) -> FlywheelConfig:
    """A flywheel with generation 1 curated (and generation 2's seeds only)."""
    cfg = FlywheelConfig(
        name="fw", runs_dir=runs_dir, seeds={"count": seeds}, eval={"suite_size": 16}, **config
    )
    suite = suite_stage.fn(cfg)
    seeds = read_seeds(seeds_stage.fn(cfg, 1, suite))
    samples = [
        Sample(
            Sample.make_id(1, s.id, i, "m0", {}),
            s.id,
            cfg.model.prompt_template.format(question=s.question),
            text,
            s.answer,
            s.difficulty,
            i,
            "m0",
            len(text),
            finish,
        )
        for s in seeds
        for i, (text, finish) in enumerate(completions(s.question, s.answer))
    ]
    folder = store.stage_dir(cfg.flywheel_dir, 1, "generate")
    with store.write_stage(folder, "generate") as (tmp, out):
        store.write_parquet(to_rows(samples), tmp / "samples.parquet")
        out.update(samples=len(samples), params={}, model="m0", hash="g", sources=[])
    curate_stage.fn(cfg, 1, folder)
    store.stage_dir(cfg.flywheel_dir, 2, "seeds").mkdir(parents=True)  # a run killed here
    return cfg


def request(cfg: FlywheelConfig, out: Path, fmt=ExportFormat.messages, **kw) -> ExportRequest:
    return ExportRequest(
        **{
            "flywheel_dir": cfg.flywheel_dir,
            "name": cfg.name,
            "out": out,
            "fmt": fmt,
            "generation": None,
            "everything": False,
            "chat_template": cfg.model.chat_template,
            "system_prompt": cfg.model.system_prompt,
            "domain": cfg.domain,
            "rewards": tuple(cfg.curation.rewards),
            "judge": None,
            "license": cfg.export.license,
            "pairs_per_seed": cfg.export.pairs_per_seed,
            "pair_seed": cfg.export.pair_seed,
            **kw,
        }
    )


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> FlywheelConfig:
    return curated_flywheel(tmp_path_factory.mktemp("runs"), export={"license": "apache-2.0"})


def test_chat_turns_render_as_the_policy_saw_the_prompt():
    tok = build_tiny_tokenizer()
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}{{ m['role'][0] }}: {{ m['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}a: {% endif %}"
    )
    for system in (None, "Be brief."):
        turns = messages("2+3", None, True, system)
        rendered = tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        assert rendered == render_prompts(tok, ["2+3"], "Q: {question}\n", True, system)[0]
    # A plain-text flywheel has no system turn: its system prompt never reached the model.
    assert messages("2+3", "5", False, "Be brief.") == [
        {"role": "user", "content": "2+3"},
        {"role": "assistant", "content": "5"},
    ]


def test_the_training_set_in_messages_format_with_a_card(cfg, tmp_path):
    out = tmp_path / "out"
    result = export(request(cfg, out))
    assert result.generation == 1  # the latest curated one, not gen 2 (no curate yet)
    accepted = from_rows(
        Sample, store.read_parquet(cfg.flywheel_dir / "gen-0001" / "curate" / "accepted.parquet")
    )
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == result.rows == len(accepted) > 0
    assert "prompt" not in ds.column_names  # TRL would read it as prompt-completion
    questions = {s.id: s.question for s in read_seeds(cfg.flywheel_dir / "gen-0001" / "seeds")}
    for row, s in zip(ds, accepted, strict=True):
        assert row["messages"] == [
            {"role": "user", "content": questions[s.seed_id]},
            {"role": "assistant", "content": s.completion},
        ]
        assert (row["id"], row["outcome"], row["kept"], row["generation"]) == (
            s.id,
            "accept",
            True,
            1,
        )
    # The JSONL holds the same rows (the file the card's `configs` name for the Hub).
    jsonl = datasets.load_dataset("json", data_files=str(out / DATA_FILE), split="train")
    assert jsonl.to_list() == ds.to_list()
    card = (out / CARD_FILE).read_text()
    assert card.startswith("---\n") and "license: apache-2.0" in card
    assert f"path: {DATA_FILE}" in card and "n<1K" in card
    assert "# fw: generation 1, the training set" in card
    assert f"| `accept:all_rewards_passed` | {len(ds)} |" in card
    assert "Rewards: accuracy, format" in card and "(the base model)" in card
    assert "chat turns need a model with a chat template" in card


def test_every_verdict_in_prompt_completion_format(cfg, tmp_path):
    result = export(request(cfg, tmp_path / "all", ExportFormat.prompt_completion, everything=True))
    ds = datasets.load_from_disk(str(tmp_path / "all"))
    assert len(ds) == SEEDS * 5 == result.rows
    assert ds[0]["prompt"].startswith("Q: ") and ds[0]["completion"].startswith("<think>")
    outcomes = result.counts
    assert outcomes["accept"] + outcomes["reject"] == len(ds)
    assert outcomes["reject:truncated"] == SEEDS
    assert outcomes["reject:accuracy:wrong"] == outcomes["reject:accuracy:no_answer"] == SEEDS
    assert {r["outcome"] for r in ds} == {"accept", "reject"}
    assert "the training set" not in (tmp_path / "all" / CARD_FILE).read_text()


def test_preference_pairs(cfg, tmp_path):
    result = export(request(cfg, tmp_path / "pairs", ExportFormat.preference, pairs_per_seed=2))
    ds = datasets.load_from_disk(str(tmp_path / "pairs"))
    assert len(ds) == result.rows == 2 * SEEDS  # two accepted and three rejected per seed
    for row in ds:
        assert row["prompt"] == f"Q: {row['question']}\n"
        assert row["chosen"].endswith(f"<answer>{row['answer']}</answer>")
        assert row["chosen_reason"] == "all_rewards_passed"
        assert row["rejected_reason"] != "all_rewards_passed" and row["rejected"] != row["chosen"]
    again = export(request(cfg, tmp_path / "again", ExportFormat.preference, pairs_per_seed=2))
    assert datasets.load_from_disk(str(tmp_path / "again")).to_list() == ds.to_list()
    assert again.counts == result.counts and result.counts["seeds"] == SEEDS


def test_chat_flywheels_export_conversational_pairs(tmp_path):
    cfg = curated_flywheel(tmp_path, model={"chat_template": True, "system_prompt": "Think."})
    export(request(cfg, tmp_path / "pairs", ExportFormat.preference, pairs_per_seed=1))
    row = datasets.load_from_disk(str(tmp_path / "pairs"))[0]
    assert row["prompt"] == messages(row["question"], None, True, "Think.")
    assert row["chosen"][0]["role"] == row["rejected"][0]["role"] == "assistant"


def test_errors_name_what_is_missing(cfg, tmp_path):
    with pytest.raises(
        ExportError, match=r"gen-0007: no such generation \(there are: \['gen-0001', 'gen-0002'\]\)"
    ):
        export(request(cfg, tmp_path / "x", generation=7))
    with pytest.raises(ExportError, match="gen-0002/curate: curation has not completed"):
        export(request(cfg, tmp_path / "x", generation=2))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="full: already exists and is not empty"):
        export(request(cfg, tmp_path / "full"))
    with pytest.raises(ExportError, match="--all"):
        export(request(cfg, tmp_path / "x", ExportFormat.preference, everything=True))
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".tmp-*"))
    empty = FlywheelConfig(name="none", runs_dir=tmp_path)
    with pytest.raises(ExportError, match="no generation has a completed curate stage"):
        export(request(empty, tmp_path / "x"))


def test_the_command_line(cfg, tmp_path):
    from flows.cli import app

    config = tmp_path / "fw.yaml"
    config.write_text(f"name: fw\nruns_dir: {cfg.runs_dir}\nexport: {{license: mit}}\n")
    run = CliRunner().invoke(
        app, ["export", str(config), str(tmp_path / "o"), "--format", "prompt-completion"]
    )
    assert run.exit_code == 0, run.output
    assert "rows of gen-0001 (prompt-completion)" in run.output
    assert "license: mit" in (tmp_path / "o" / CARD_FILE).read_text()
    bad = CliRunner().invoke(app, ["export", str(config), str(tmp_path / "p"), "--generation", "2"])
    assert bad.exit_code == 1 and "curation has not completed" in " ".join(bad.output.split())
