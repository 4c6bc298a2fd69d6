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
