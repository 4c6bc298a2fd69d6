"""The set-up stages: the frozen eval suite (with the eval settings frozen beside it) and the
generation-0 policy."""

from __future__ import annotations

import random
from pathlib import Path

from tasks import store
from tasks.config import FlywheelConfig
from tasks.domains import DOMAINS, eval_suite, make_seeds
from tasks.records import stable_hash, to_rows
from tasks.requests import bootstrap_request, to_json
from tasks.stages.common import (
    completed,
    read_seeds,
    stage_task,
)
from tasks.subproc import run_worker


# -- set-up stages -------------------------------------------------------------------------------
@stage_task(name="suite")
def suite_stage(cfg: FlywheelConfig) -> Path:
    """Freeze the held-out suite on the first run; later runs read it back unchanged."""
    folder = cfg.flywheel_dir / "suite"
    # What freezes an extra suite (max_drop is a gate setting and may change later).
    extras = {
        k: {"levels": v.levels, "size": v.size} for k, v in sorted(cfg.eval.extra_suites.items())
    }
    done = completed(folder)
    if done is None:
        domain = DOMAINS[cfg.domain]
        items = eval_suite(domain, cfg.eval.suite_size)
        for name, spec in extras.items():  # each from its own stream, disjoint from the rest
            if bad := [x for x in spec["levels"] if not 1 <= x <= domain.max_difficulty]:
                raise ValueError(
                    f"eval.extra_suites.{name}.levels: {bad} outside 1..{domain.max_difficulty}"
                )
            rng = random.Random(f"{domain.name}/extra-suite/{name}/{spec['size']}")
            taken = {s.question for s in items}
            items += make_seeds(
                domain, spec["size"], spec["levels"], rng, taken, origin=f"suite:{name}"
            )
        with store.write_stage(folder, "suite") as (tmp, out):
            store.write_parquet(to_rows(items), tmp / "seeds.parquet")
            out["hash"] = stable_hash(sorted((s.id, s.question, s.answer) for s in items))
            out["items"] = len(items)
            out["extra_suites"] = extras
            out["eval_settings"] = eval_settings(cfg)
        return folder
    check_frozen_eval(done.get("eval_settings"), eval_settings(cfg), folder)
    if done.get("extra_suites", {}) != extras:
        raise ValueError(
            f"eval.extra_suites differs from the suites frozen in {folder} "
            f"({done.get('extra_suites', {})}): generations are only comparable on the same "
            "suites; start a new flywheel name to change them"
        )
    return folder


# The eval settings frozen with the suite: per-item results sampled with other values do not pair.
FROZEN_EVAL = ("k", "temperature", "max_tokens", "seed")


def eval_settings(cfg: FlywheelConfig) -> dict:
    return {name: getattr(cfg.eval, name) for name in FROZEN_EVAL}


def check_frozen_eval(frozen: dict | None, current: dict, folder: Path) -> None:
    """Refuse eval settings that differ from those frozen with the suite (a suite frozen before
    they were recorded has none: then the gate's own check of both evals' settings stands)."""
    if frozen is None:
        return
    changed = [
        f"eval.{k}: {current.get(k)!r} (frozen: {v!r})"
        for k, v in frozen.items()
        if current.get(k) != v
    ]
    if changed:
        raise ValueError(
            f"{'; '.join(changed)}: the eval settings are frozen with the suite in {folder}; "
            "generations are only comparable under the same settings; restore them or start a "
            "new flywheel name to change them"
        )


@stage_task(name="base-model")
def base_model_stage(cfg: FlywheelConfig, suite_folder: Path) -> str:
    """The generation-0 policy: a local checkpoint, or the tiny model made from scratch."""
    if cfg.model.base != "bootstrap":
        path = Path(cfg.model.base)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model.base: {path} is not a Hugging Face checkpoint folder")
        return str(path)
    request = bootstrap_request(cfg, [s.question for s in read_seeds(suite_folder)])
    return run_worker("tasks.bootstrap", to_json(request))["path"]
