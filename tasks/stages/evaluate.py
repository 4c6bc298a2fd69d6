"""The eval stage: one model on the frozen suite, k samples per item and one greedy sample."""

from __future__ import annotations

import time
from pathlib import Path

from tasks import store
from tasks.config import FlywheelConfig
from tasks.gate import (
    GREEDY,
)
from tasks.metrics import ItemResult, report, score_item
from tasks.records import Seed, to_rows
from tasks.requests import eval_sampling, greedy_sampling, to_json
from tasks.stages.common import (
    completed,
    heavy_task,
    read_seeds,
    sample_seeds,
)


@heavy_task(name="eval", task_run_name="{label}/eval")
def eval_stage(
    cfg: FlywheelConfig, folder: Path, model_path: str, suite_folder: Path, label: str
) -> dict:
    """Score one model on the frozen suite: k samples per item, fixed sampling seed; with
    `eval.greedy` also one greedy sample per item (`greedy_pass@1`, `greedy_items.parquet`, and
    `greedy_items.<suite>.parquet` per extra suite)."""
    done = completed(folder)
    if done is not None:
        return done["report"]
    suite = read_seeds(suite_folder)
    e = cfg.eval
    sampling = eval_sampling(cfg)
    with store.write_stage(folder, "eval") as (tmp, out):
        t0 = time.time()
        # The greedy pass (T=0, one sample per item) runs on the same engine, after the k samples.
        greedy_raw = tmp / "greedy_raw.parquet"
        once = greedy_sampling(cfg)
        also = [(once, greedy_raw)] if e.greedy else []
        stats = sample_seeds(cfg, model_path, suite, sampling, tmp, folder, also=also)
        parts = _scored(cfg, suite, tmp / "raw.parquet", tmp / "completions.parquet")
        main = parts.pop(None)
        store.write_parquet(to_rows(main), tmp / "items.parquet")  # the main suite's items
        rep = report(main, e.k)
        suites = {name: report(group, e.k) for name, group in sorted(parts.items())}
        greedy_stats = stats.pop("also", [])
        if e.greedy:  # scored per item, so the gate can pair champion and challenger
            out["greedy_params"] = to_json(once)
            out["greedy_generate"] = greedy_stats[0]
            greedy = _scored(cfg, suite, greedy_raw, tmp / "greedy_completions.parquet")
            greedy_main = greedy.pop(None)
            store.write_parquet(to_rows(greedy_main), tmp / GREEDY_ITEMS)
            rep[GREEDY] = report(greedy_main, 1)["pass@1"]
            for name, group in greedy.items():
                suites[name][GREEDY] = report(group, 1)["pass@1"]
                store.write_parquet(to_rows(group), tmp / greedy_items_file(name))
        out.update(
            report=rep,
            suites=suites,
            model=model_path,
            params=to_json(sampling),
            generate=stats,
            seconds=time.time() - t0,
        )
    return rep


GREEDY_ITEMS = "greedy_items.parquet"


def greedy_items_file(suite: str | None) -> str:
    """The file of a suite's greedy items in an eval folder (None: the main suite)."""
    return GREEDY_ITEMS if suite is None else f"greedy_items.{suite}.parquet"


def _scored(
    cfg: FlywheelConfig, suite: list[Seed], raw: Path, keep_as: Path
) -> dict[str | None, list[ItemResult]]:
    """Score the worker's samples of every suite item, grouped by suite (None: the main one);
    the samples file is kept under `keep_as` for inspection."""
    by_seed: dict[str, list[dict]] = {}
    for r in store.read_parquet(raw):
        by_seed.setdefault(r["seed_id"], []).append(r)
    raw.rename(keep_as)
    parts: dict[str | None, list[ItemResult]] = {}
    for s in suite:
        rs = sorted(by_seed.get(s.id, []), key=lambda r: r["sample_index"])
        item = score_item(
            s.id,
            s.difficulty,
            s.answer,
            cfg.domain,
            [r["completion"] for r in rs],
            [r["num_tokens"] for r in rs],
            [r["finish_reason"] for r in rs],
        )
        parts.setdefault(_suite_of(s), []).append(item)
    return parts


def _suite_of(seed: Seed) -> str | None:
    """The extra suite an item of the suite folder belongs to (None: the main suite)."""
    return seed.origin.removeprefix("suite:") if seed.origin.startswith("suite:") else None
