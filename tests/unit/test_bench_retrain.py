"""bench.retrain's reading of an eval: greedy pass@1 per level, and its one-line summary."""

from bench.retrain import greedy_levels, line
from tasks import store
from tasks.stages import GREEDY_ITEMS


def test_greedy_pass1_is_averaged_per_level(tmp_path):
    rows = [
        {"item_id": "a", "difficulty": 1, "correct": 1, "n": 1},
        {"item_id": "b", "difficulty": 1, "correct": 0, "n": 1},
        {"item_id": "c", "difficulty": 2, "correct": 1, "n": 1},
    ]
    store.write_parquet(rows, tmp_path / GREEDY_ITEMS)
    assert greedy_levels(tmp_path) == {1: 0.5, 2: 1.0}
    text = line("x", {"pass@1": 0.1, "greedy": 0.25, "greedy_levels": {1: 0.5}, "steps": 20})
    assert text == "           x: pass@1 0.100, greedy 0.250 [levels 1: 0.500] (20 steps)"
