"""`flywheel train-rm`: the scalar reward model learnt from a flywheel's curated samples.

Collects every accepted (1) and rejected (0) sample so far, holds a deterministic share out,
trains the model in its own worker process (tasks/reward_model.py), and reports its agreement on
the held-out samples with the curation verdicts and with the judge's votes where curation ran
the judge. The report lands beside the model as `reward-model/report.json`.
"""

from __future__ import annotations

from pathlib import Path

from tasks import store
from tasks.requests import reward_model_request
from tasks.reward_model import collect, rm_scores, split, train_in_subprocess

RM_DIR = "reward-model"
"""The model's folder in the flywheel folder (`curation.reward_model` names it)."""


class NotEnoughSamples(RuntimeError):
    """Curation has not yet labelled enough samples for both a training and a held-out set."""


def train_reward_model(flywheel_dir: Path, steps: int, holdout: float) -> dict:
    """Train `<flywheel>/reward-model` for `steps` optimizer steps on all but `holdout` of the
    curated samples; its report (sizes, training figures, agreement on the held-out share)."""
    flywheel_dir = Path(flywheel_dir)
    train, held = split(collect(flywheel_dir), holdout)
    if not train or not held:
        raise NotEnoughSamples(f"{flywheel_dir}: not enough curated samples to train on")
    out = flywheel_dir / RM_DIR
    train_file = flywheel_dir / "reward-model-train.parquet"
    store.write_parquet(train, train_file)
    stats = train_in_subprocess(reward_model_request(train_file, out, steps))
    scores = rm_scores(str(out), [r["prompt"] for r in held], [r["completion"] for r in held])
    report = {"train_rows": len(train), "held_out": len(held), **stats}
    report.update(rm_agreement(held, scores, judge_votes(flywheel_dir)))
    store.write_json(report, out / "report.json")
    return report


def judge_votes(flywheel_dir: Path) -> dict[str, str]:
    """The judge's outcome per sample id, over every generation whose curation ran it."""
    votes = {}
    for f in sorted(Path(flywheel_dir).glob("gen-0*/curate/judge_votes.parquet")):
        votes.update({r["sample_id"]: r["outcome"] for r in store.read_parquet(f)})
    return votes


def rm_agreement(held: list[dict], scores: list[float], judge: dict[str, str]) -> dict:
    """Agreement of the reward model (P >= 0.5) with the curation labels and with the judge."""
    pred = [p >= 0.5 for p in scores]
    out = {
        "agreement_curation": sum(p == bool(r["label"]) for p, r in zip(pred, held, strict=True))
        / len(held)
    }
    pairs = [
        (p, judge[r["sample_id"]] == "accept")
        for p, r in zip(pred, held, strict=True)
        if judge.get(r["sample_id"]) in ("accept", "reject")
    ]
    out["judge_compared"] = len(pairs)
    out["agreement_judge"] = sum(a == b for a, b in pairs) / len(pairs) if pairs else None
    return out
