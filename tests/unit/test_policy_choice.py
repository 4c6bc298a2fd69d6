from pathlib import Path

from flows.flywheel import _policy
from tasks.config import FlywheelConfig
from tasks.outputs import Champion

CHAMPION = Champion("/models/champion", {"pass@1": 0.1}, 0)


def test_champion_by_default_previous_generation_when_staged(tmp_path):
    cfg = FlywheelConfig.model_validate({"runs_dir": str(tmp_path), "name": "r1"})
    assert _policy(cfg, 1, CHAMPION) == _policy(cfg, 3, CHAMPION) == "/models/champion"
    staged = cfg.model_copy(update={"train": cfg.train.model_copy(update={"build_on": "previous"})})
    assert _policy(staged, 1, CHAMPION) == "/models/champion"  # the base model starts the chain
    assert Path(_policy(staged, 3, CHAMPION)) == tmp_path / "r1" / "gen-0002" / "train" / "model"


def test_training_starts_from_the_policy_by_default_or_from_the_base_model(tmp_path):
    from flows.flywheel import _start
    from tasks import store

    cfg = FlywheelConfig.model_validate({"runs_dir": str(tmp_path), "name": "r1"})
    eval0 = store.gen_dir(cfg.flywheel_dir, 0) / "eval"
    with store.write_stage(eval0, "eval") as (_, out):
        out.update(report={"pass@1": 0.05}, model="/models/base", params={})
    assert _start(cfg, "/models/champion") == "/models/champion"
    from_base = cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"start_from": "base"})}
    )
    assert _start(from_base, "/models/champion") == "/models/base"
