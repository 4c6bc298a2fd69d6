"""The curate stage: rule verifiers, the judge and the reward model over every sample; the
accepted set, every verdict, the per-seed pass rates and the judge's QC.

The judge sees every sample whose verdict it decides and, of the samples the rules decide, all
or a seeded random draw of `judge.qc_sample` (`tasks.judge_qc.qc_selection`): there its vote only
measures it, and judging 16k candidates to measure a judge costs more than the rest of curation.

The table is read in record batches and curated a bucket of seeds at a time
(`tasks.curate_stream`), so a generation of a million samples curates in bounded memory."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tasks import store
from tasks.config import FlywheelConfig
from tasks.curate import ANSWER_RULE, JUDGE, Curation, rule_settings, sample_verdicts
from tasks.curate_stream import BUCKET_ROWS, curate_file
from tasks.judge import JudgeVote, cut_counts, infra_error_share
from tasks.judge_qc import qc_metrics, qc_selection
from tasks.judge_run import judge_candidates
from tasks.records import Sample, Verdict, from_rows
from tasks.requests import judge_settings
from tasks.reward_model import RM, rm_scores
from tasks.stages.common import (
    completed,
    read_seeds,
    stage_task,
)
from tasks.stages.judge import judge_model_path


def new_curation(cfg: FlywheelConfig) -> Curation:
    """The curation a generation runs, from the config: rewards, cap, hygiene, rule settings."""
    h = cfg.hygiene
    return Curation(
        cfg.curation.rewards,
        cfg.domain,
        cfg.curation.max_per_seed,
        near_dup=h.near_dup,
        shingle=h.shingle,
        num_perm=h.num_perm,
        combine=cfg.judge.combine,
        settings=rule_settings(
            cfg.sampling.max_tokens, cfg.curation.length_buffer, cfg.curation.repetition_ngram
        ),
    )


@stage_task(name="curate", task_run_name="gen-{generation:04d}/curate")
def curate_stage(cfg: FlywheelConfig, generation: int, generate_folder: Path) -> Path:
    folder = store.stage_dir(cfg.flywheel_dir, generation, "curate")
    if completed(folder) is not None:
        return folder
    path = store.verify(generate_folder / "samples.parquet")
    n = store.row_count(path)
    judged = _judge_pass(cfg, generation, path, folder) if JUDGE in cfg.curation.rewards else None
    columns = {"judge_verdict": judged.verdicts(n)} if judged else {}
    if RM in cfg.curation.rewards:
        columns["rm_score"] = _rm_scores(cfg, path)
    curation = new_curation(cfg)
    with store.write_stage(folder, "curate") as (tmp, out):
        # `seconds`: the curation pass, its reads and writes included (they interleave), without
        # the judge's worker run.
        started = time.perf_counter()
        picked = judged.picked if judged else ()
        result = curate_file(path, tmp, curation, columns, picked, BUCKET_ROWS)
        out.update(
            counts=result.counts,
            accepted=result.kept,
            accept_rate=result.counts.get("accept", 0) / max(n, 1),
            seed_solve_rate=sum(v > 0 for v in result.seed_pass_rate.values())
            / max(len(result.seed_pass_rate), 1),
            reasoning_paths=sum(result.paths.values())
            / max(sum(v > 0 for v in result.paths.values()), 1),
            diversity=result.diversity,
            hash=result.hash,
            seconds=time.perf_counter() - started,
        )
        if judged:
            seen = judged.samples
            store.write_parquet(
                [{"sample_id": s.id, **asdict(v)} for s, v in zip(seen, judged.votes, strict=True)],
                tmp / "judge_votes.parquet",
            )
            out["judge"] = {
                **qc_metrics(judged.votes, [result.rules[i] for i in judged.picked]),
                "qc_sample": cfg.judge.qc_sample,
                "samples": n,
                "judged": len(judged.picked),
                "decided": judged.decided,
                **cut_counts([s.completion for s in seen], cfg.judge.candidate_chars()),
                **_judge_stats(judged.stats),
            }
    return folder


def _rm_scores(cfg: FlywheelConfig, path: Path) -> list[float]:
    """The reward model's P(accept) of every sample, in one worker run (one model load; its
    request holds every prompt and completion)."""
    rm = cfg.curation.reward_model
    if rm is None or not (Path(rm) / "config.json").is_file():
        raise FileNotFoundError(
            f"curation.reward_model: {rm} is not a reward-model folder "
            "(`flywheel train-rm` writes <runs_dir>/<name>/reward-model)"
        )
    prompts, completions = [], []
    for batch in store.iter_batches(path, ["prompt", "completion"]):
        prompts += batch.column(0).to_pylist()
        completions += batch.column(1).to_pylist()
    return rm_scores(str(rm), prompts, completions)


NOT_JUDGED = Verdict("infra_error", "not_judged")
"""The judge column of a sample the judge did not see: its verdict is the rules' (an infra_error
would keep it out, never count against it, if a mode ever read it)."""


@dataclass(frozen=True)
class JudgePass:
    """The judge over one generation: which samples it saw (indices, ascending), their votes in
    that order, the worker's stats, how many of them it decides (the rest are QC only), and
    the samples it saw."""

    picked: list[int]
    votes: list[JudgeVote]
    stats: dict
    decided: int
    samples: list[Sample]

    def verdicts(self, n: int) -> list[Verdict]:
        """One judge verdict per sample of `n`, NOT_JUDGED where the judge did not look."""
        out = [NOT_JUDGED] * n
        for i, v in zip(self.picked, self.votes, strict=True):
            out[i] = v.verdict
        return out


def judge_decides(cfg: FlywheelConfig, samples: list[Sample]) -> list[bool]:
    """Per sample, whether the judge's vote decides its verdict: under `rules_then_judge`, where
    the answer check cannot apply (not listed, or no gold answer; `tasks.curate.sample_verdicts`
    says which); under `both` and `judge_only`, everywhere."""
    if cfg.judge.combine != "rules_then_judge" or ANSWER_RULE not in cfg.curation.rewards:
        return [True] * len(samples)
    return [rules is None for _, _, rules in sample_verdicts(samples, [ANSWER_RULE], cfg.domain)]


def _judge_pass(cfg: FlywheelConfig, generation: int, path: Path, folder: Path) -> JudgePass:
    """The judge over the samples of `path` it decides plus the QC draw (`judge.qc_sample`,
    seeded by `judge.seed + generation`), in one worker run. Two streamed reads of the table:
    which samples the judge decides, then the ones it sees."""
    decides: list[bool] = []
    for batch in store.iter_batches(path):
        decides += judge_decides(cfg, from_rows(Sample, batch.to_pylist()))
    picked = qc_selection(decides, cfg.judge.qc_sample, cfg.judge.seed + generation)
    want, seen, start = set(picked), [], 0
    for batch in store.iter_batches(path):
        idx = [i for i in range(batch.num_rows) if start + i in want]
        seen += from_rows(Sample, batch.take(idx).to_pylist()) if idx else []
        start += batch.num_rows
    votes, stats = _judge_samples(cfg, generation, seen, folder)
    infra_error_share(votes, cfg.judge.max_infra_error_share)  # past it: stop, not a biased set
    return JudgePass(picked, votes, stats, sum(decides[i] for i in picked), seen)


def _judge_samples(
    cfg: FlywheelConfig, generation: int, samples: list[Sample], folder: Path
) -> tuple[list, dict]:
    """The given samples judged in one worker run (one engine load, one batched engine call)."""
    questions = {
        s.id: s.question for s in read_seeds(store.stage_dir(cfg.flywheel_dir, generation, "seeds"))
    }
    model = judge_model_path(cfg, cfg.flywheel_dir / "suite")
    settings = judge_settings(cfg, model, seed=cfg.judge.seed + generation)
    log = folder.parent / f"{folder.name}-judge.log"
    return judge_candidates(
        [questions[s.seed_id] for s in samples], [s.completion for s in samples], settings, log
    )


def _judge_stats(stats: dict) -> dict:
    keep = ("calls", "seconds", "engine_load_s", "candidates_per_s", "tokens_per_s")
    keep += ("wall_s", "cpu_s")  # the worker process, start to exit (`tasks.subproc`)
    return {k: float(stats[k]) for k in keep} | {"rubric_version": stats["rubric_version"]}
