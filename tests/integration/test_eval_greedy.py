"""The eval stage on a real (tiny, random) model: k sampled completions per item plus one
greedy completion per item from the same generation worker, scored per item, and the gate
stage pairing two such evals."""

import pytest

from tasks import store
from tasks.config import FlywheelConfig
from tasks.gate import GREEDY
from tasks.outputs import Champion
from tasks.stages import GREEDY_ITEMS, eval_stage, gate_decision, suite_stage
from tasks.stages.evaluate import greedy_items_file

pytestmark = pytest.mark.slow

SUITE, EXTRA, K = 12, 4, 2


def test_eval_records_greedy_pass1_per_item_and_the_gate_pairs_it(tmp_path, tiny_model):
    cfg = FlywheelConfig(
        name="greedy",
        runs_dir=tmp_path,
        engine={"backend": "hf", "hf_batch_size": 16},
        eval={
            "suite_size": SUITE,
            "k": K,
            "max_tokens": 12,
            "extra_suites": {"hard": {"levels": [2], "size": EXTRA, "greedy": True}},
        },
    )
    suite = suite_stage.fn(cfg)
    reports = []
    for g in (0, 1):  # the same model twice: greedy decoding must give the same answers
        folder = store.stage_dir(cfg.flywheel_dir, g, "eval")
        reports.append(eval_stage.fn(cfg, folder, tiny_model, suite, label=f"gen-{g:04d}"))
    folder = store.stage_dir(cfg.flywheel_dir, 0, "eval")
    out = store.read_manifest(folder).outputs
    assert out["params"]["n"] == K and out["params"]["temperature"] == 1.0
    assert out["greedy_params"] == {**out["params"], "n": 1, "temperature": 0.0}

    items = store.read_parquet(folder / GREEDY_ITEMS)
    assert len(items) == SUITE and {i["n"] for i in items} == {1}
    assert reports[0][GREEDY] == pytest.approx(sum(i["correct"] for i in items) / SUITE)
    assert GREEDY in out["suites"]["hard"]
    hard = store.read_parquet(folder / greedy_items_file("hard"))
    assert len(hard) == EXTRA and out["suites"]["hard"][GREEDY] == pytest.approx(
        sum(i["correct"] for i in hard) / EXTRA
    )
    greedy = store.read_parquet(folder / "greedy_completions.parquet")
    assert len(greedy) == SUITE + EXTRA and {r["sample_index"] for r in greedy} == {0}
    assert len(store.read_parquet(folder / "completions.parquet")) == (SUITE + EXTRA) * K
    again = store.read_parquet(
        store.stage_dir(cfg.flywheel_dir, 1, "eval") / "greedy_completions.parquet"
    )
    assert [r["completion"] for r in again] == [r["completion"] for r in greedy]

    d = gate_decision(
        cfg, Champion(tiny_model, reports[0], 0, None), Champion(tiny_model, reports[1], 1, None)
    )
    assert d.guards[GREEDY]["ok"] and d.guards[GREEDY]["regression"] == 0
    assert d.guards[f"suite.hard.{GREEDY}"]["ok"]
    assert not d.promote and d.notes == ()
