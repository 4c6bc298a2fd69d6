"""P7's fresh items: drawn from the generator, none seen by any arm, the same on every run, and
refused loudly when a level is used up; the figures' rows and table."""

import random
from pathlib import Path

import pytest

from bench.fresh_items import (
    FRESH_ORIGIN,
    FRESH_SEED,
    FreshItemsError,
    draw_fresh,
    fresh_name,
    level_quotas,
    questions_from_prompts,
)
from tasks.config import load_config
from tasks.domains import DOMAINS, eval_suite, make_seeds
from tasks.domains.arith import LEVELS, evaluate

ROOT = Path(__file__).parents[2]
ARITH = DOMAINS["arith"]
TEMPLATE = load_config(ROOT / "configs" / "bench.yaml").model.prompt_template


def _seen() -> tuple[set[str], set[str]]:
    """A frozen suite and three generations' worth of seed sets at levels 1-3."""
    suite = {s.question for s in eval_suite(ARITH, 512)}
    rng = random.Random("test-seeds")
    seeds = make_seeds(ARITH, 3 * 512, [1, 1, 2, 3], rng, suite)
    return suite, {s.question for s in seeds}


def test_fresh_items_are_in_no_suite_and_no_seed_set():
    suite, seeds = _seen()
    items = draw_fresh(ARITH, 256, [2, 3], suite | seeds)
    questions = [s.question for s in items]
    assert len(set(questions)) == 256
    assert not set(questions) & suite and not set(questions) & seeds
    assert {s.origin for s in items} == {FRESH_ORIGIN}
    # Each item's gold answer is the domain's own: they are scored like suite items.
    assert all(s.answer == str(evaluate(s.question)) for s in items)


def test_fresh_items_respect_the_levels_in_equal_shares():
    items = draw_fresh(ARITH, 101, [3, 2, 4], set())
    by_level = {lv: [s for s in items if s.difficulty == lv] for lv in (2, 3, 4)}
    assert [len(v) for v in by_level.values()] == [34, 34, 33]
    for lv, seeds in by_level.items():  # the generator's grammar of that level: its operands
        operands, bound = LEVELS[lv]
        for s in seeds:
            nums = s.question.replace("-", "+").split("+")
            assert len(nums) == operands and all(0 <= int(x) < bound for x in nums)


def test_fresh_items_are_deterministic_and_levels_drawn_apart():
    suite, seeds = _seen()
    first = draw_fresh(ARITH, 64, [2, 3], suite | seeds)
    assert draw_fresh(ARITH, 64, [2, 3], suite | seeds) == first
    # Excluding more level-2 questions leaves the level-3 items as they were.
    level2 = {s.question for s in first if s.difficulty == 2}
    again = draw_fresh(ARITH, 64, [2, 3], suite | seeds | level2)
    assert [s for s in again if s.difficulty == 3] == [s for s in first if s.difficulty == 3]
    assert not {s.question for s in again} & level2
    # Another generator seed is another draw.
    other = draw_fresh(ARITH, 64, [2, 3], suite | seeds, seed="another-stream")
    assert {s.question for s in other} != {s.question for s in first}


def _level1_questions() -> list[str]:
    return [f"{a}{op}{b}" for a in range(20) for op in "+-" for b in range(20)]


def test_a_used_up_level_is_refused_with_a_clear_error():
    every = _level1_questions()
    assert len(every) == 800  # level 1's whole space
    unseen = set(every[::200])  # 4 left unseen
    exclude = set(every) - unseen
    got = draw_fresh(ARITH, 4, [1], exclude, patience=5000)
    assert {s.question for s in got} == unseen
    with pytest.raises(FreshItemsError, match="only 4 of the 5 level-1 items .* used up"):
        draw_fresh(ARITH, 5, [1], exclude, patience=5000)


@pytest.mark.parametrize("n, levels, match", [(0, [2], "n must be"), (4, [0, 2], "outside")])
def test_bad_requests_are_refused(n, levels, match):
    with pytest.raises(ValueError, match=match):
        draw_fresh(ARITH, n, levels, set())


def test_level_quotas_split_evenly_easier_levels_first():
    assert level_quotas(10, [3, 2, 2]) == {2: 5, 3: 5}
    assert level_quotas(7, [2, 3, 4]) == {2: 3, 3: 2, 4: 2}
    with pytest.raises(ValueError, match="no levels"):
        level_quotas(4, [])


def test_the_fresh_seed_is_no_stage_s_stream():
    # No stage or flow source spells the fresh stream: the flywheel never drew from it.
    sources = [*(ROOT / "tasks").rglob("*.py"), *(ROOT / "flows").rglob("*.py")]
    assert sources and not [p for p in sources if FRESH_SEED in p.read_text()]


def test_questions_come_back_out_of_their_prompts():
    prompts = [TEMPLATE.format(question=q) for q in ("12+3-4", "7-7")] + ["another shape"]
    assert questions_from_prompts(prompts, TEMPLATE) == {"12+3-4", "7-7"}
    assert questions_from_prompts(["Q: 1+2\nA:"], "Q: {question}\nA:") == {"1+2"}
    with pytest.raises(ValueError, match="no \\{question\\}"):
        questions_from_prompts([], "no field")


def test_fresh_name_names_the_draw():
    assert fresh_name("arith", 256, [3, 2]) == "arith-levels-2-3-n256"


# -- reading what the arms saw -------------------------------------------------------------------
def _stage(folder: Path, stage: str, rows: list[dict], table: str) -> None:
    from tasks import store

    with store.write_stage(folder, stage) as (tmp, _):
        store.write_parquet(rows, tmp / table)


def _seed_rows(questions: list[str]) -> list[dict]:
    from tasks.records import Seed, to_rows

    return to_rows([Seed.make(q, "0", 2) for q in questions])


def test_seen_questions_read_suites_seeds_and_training_prompts(tmp_path):
    from bench.bench_p7 import flywheel_folders, seen_questions

    runs = tmp_path / "runs"
    _stage(runs / "p7-flywheel" / "suite", "suite", _seed_rows(["1+1"]), "seeds.parquet")
    _stage(runs / "p7-flywheel/gen-0001/seeds", "seeds", _seed_rows(["2+2"]), "seeds.parquet")
    _stage(runs / "p7-flywheel/gen-0002/seeds", "seeds", _seed_rows(["3+3"]), "seeds.parquet")
    # A reference arm: no suite, no seeds stage, only prompts of what it trained on.
    rows = [{"prompt": TEMPLATE.format(question="4+4"), "completion": "x"}]
    _stage(runs / "p7-reference/gen-0001/train", "train", rows, "train.parquet")
    # A stage that has not landed (no manifest) is not read; nor is the shared models folder.
    (runs / "p7-rft/gen-0001/seeds").mkdir(parents=True)
    (runs / "models" / "bootstrap").mkdir(parents=True)
    folders = flywheel_folders(runs)
    assert [p.name for p in folders] == ["p7-flywheel", "p7-reference", "p7-rft"]
    assert seen_questions(folders, TEMPLATE) == {"1+1", "2+2", "3+3", "4+4"}
    # What the arms saw is what the draw leaves out.
    items = draw_fresh(ARITH, 8, [1], seen_questions(folders, TEMPLATE))
    assert not {s.question for s in items} & {"1+1", "2+2", "3+3", "4+4"}


def test_fresh_targets_are_the_base_the_arms_and_the_levers():
    from bench.bench_p7 import fresh_targets

    out = {
        "base": {"eval": "/w/runs/p7-flywheel/gen-0000/eval"},
        "arms": {
            "rft": {"eval": "/w/runs/p7-rft/gen-0001/eval"},
            "flywheel": {"eval": "/w/runs/p7-flywheel/gen-0002/eval"},
        },
        "levers": {"low_lr": {"eval": "/w/runs/p7-low_lr/gen-0003/eval"}},
    }
    assert {k: str(v) for k, v in fresh_targets(out).items()} == {
        "base": "/w/runs/p7-flywheel/gen-0000/eval",
        "flywheel": "/w/runs/p7-flywheel/gen-0002/eval",
        "rft": "/w/runs/p7-rft/gen-0001/eval",
        "lever low_lr": "/w/runs/p7-low_lr/gen-0003/eval",
    }
    # A levers-only run: the base from the lever's own generation 0.
    levers = {"levers": out["levers"]}
    assert str(fresh_targets(levers)["base"]) == "/w/runs/p7-low_lr/gen-0000/eval"
    assert fresh_targets({"levers": {}}) == {}


# -- the figures ---------------------------------------------------------------------------------
def _fresh(p1: float, gain: float | None) -> dict:
    f = {
        "pass@1": p1,
        "pass@1_ci": [p1 - 0.02, p1 + 0.02],
        "greedy": 0.2,
        "pass@k": 0.3,
        "levels": {"2": p1 + 0.05, "3": p1 - 0.05},
        "n": 256,
        "fresh_levels": [2, 3],
        "generator_seed": FRESH_SEED,
        "seen": 0,
    }
    if gain is not None:
        f.update(gain=gain, gain_ci=[gain - 0.01, gain + 0.01])
        f.update(greedy_gain=-0.01, greedy_gain_ci=[-0.03, 0.01])
    return f


def _figures() -> dict:
    from tests.unit.test_bench_p7 import _figures as suite_figures

    m = suite_figures(0.03, 0.02)
    m["fresh"] = {"n": 256, "levels": [2, 3], "generator_seed": FRESH_SEED}
    m["fresh"]["base"] = _fresh(0.10, None)
    for name, a in m["arms"].items():
        if name != "grpo":  # an arm without a fresh block is left out of the fresh rows
            a["fresh"] = _fresh(0.12, 0.02)
    m["levers"]["curriculum"]["fresh"] = _fresh(0.13, 0.03)
    return m


def test_fresh_rows_and_table_sit_beside_the_suite_figures():
    from bench.bench_p7 import fresh_table, markdown_table, ratios

    m = _figures()
    rows = [r for r in ratios(m) if "fresh items" in r.name]
    assert [r.name.split(" pass@1")[0] for r in rows] == [
        "base",
        "flywheel",
        "one-shot RFT",
        "reference SFT (upper bound)",
        "lever curriculum",
    ]
    assert rows[0].value == pytest.approx(0.10) and rows[0].goal is None
    assert "256 fresh items of levels [2, 3]" in rows[1].detail
    assert "greedy gain -0.010 [-0.030, 0.010]" in rows[1].detail
    assert "level 2 0.170" in rows[1].detail
    lines = fresh_table(m).splitlines()
    assert lines[2].startswith("| base | 0.100 [0.090, 0.110] | 0.300 | 0.100 [0.080, 0.120]")
    assert lines[3].split("|")[7].strip() == "+0.020 [0.010, 0.030]"
    assert len([line for line in lines if line.startswith("| ")]) == 1 + 5
    # The suite's table is unchanged by the fresh blocks.
    assert len(markdown_table(m).splitlines()) == 2 + 8


def test_no_fresh_table_without_fresh_items():
    from bench.bench_p7 import fresh_table, ratios
    from tests.unit.test_bench_p7 import _figures as suite_figures

    m = suite_figures(0.03, 0.02)
    assert fresh_table(m) == ""
    assert not [r for r in ratios(m) if "fresh" in r.name]
