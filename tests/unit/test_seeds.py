"""Seed evolution: sources, their mix, the curriculum rule, and the arith domain's hooks."""

import random
from collections import Counter

import pytest

from tasks.domains import DOMAINS, eval_suite, make_seeds
from tasks.domains.arith import evaluate, mutate, read_problem
from tasks.records import Seed
from tasks.seeds import (
    estimate_levels,
    evolve,
    failure_pool,
    frontier,
    level_pass_rates,
    level_weights,
    model_prompts,
    problem_text,
    quotas,
    signal,
    weighted_sample,
)

ARITH = DOMAINS["arith"]


# -- curriculum ----------------------------------------------------------------------------------
def test_signal_is_zero_at_the_edges():
    assert signal(0.0) == signal(1.0) == 0.0
    assert signal(0.5) == 0.25 > signal(0.2) > signal(0.05)


def test_level_pass_rates_average_per_level():
    seeds = [Seed("a", "1+1", "2", 1), Seed("b", "1+2", "3", 1), Seed("c", "1+2+3", "6", 2)]
    assert level_pass_rates(seeds, {"a": 1.0, "b": 0.5, "c": 0.25}) == {1: 0.75, 2: 0.25}


def test_unmeasured_levels_are_estimated_from_neighbours():
    est = estimate_levels({2: 0.4, 3: 0.1}, 5)
    assert est == {1: 0.7, 2: 0.4, 3: 0.1, 4: 0.05, 5: 0.025}


@pytest.mark.parametrize(
    "measured,favoured",
    [
        ({1: 0.95, 2: 0.6, 3: 0.1}, 2),  # level 2 is solved sometimes: it teaches most
        ({1: 1.0, 2: 0.97, 3: 0.7, 4: 0.35}, 4),  # the model improved: the mix moves up
        ({1: 0.3, 2: 0.0, 3: 0.0}, 1),  # a weak model: the mix moves down
    ],
)
def test_curriculum_favours_sometimes_solved_levels(measured, favoured):
    w = level_weights(measured, 5, floor=0.02)
    assert max(w, key=w.get) == favoured
    assert sum(w.values()) == pytest.approx(1.0)
    top = frontier(measured, 5, 0.02)
    assert all(w[lv] > 0 for lv in range(1, top + 1))  # the floor: no level up to it vanishes


@pytest.mark.parametrize(
    "measured,top",
    [
        ({1: 0.17, 2: 0.05}, 3),  # a weak policy: one level past level 2, not the domain's 5
        ({1: 0.23, 2: 0.1, 3: 0.003, 4: 0.0, 5: 0.0}, 3),  # lucky level-3 samples open no level 4
        ({1: 0.3, 2: 0.0, 3: 0.0}, 2),
        ({1: 1.0, 2: 0.97, 3: 0.7, 4: 0.35}, 5),
        ({2: 0.01, 3: 0.0}, 2),  # nothing solved: the lowest measured level
        ({}, 5),  # nothing measured: every level
    ],
)
def test_curriculum_stops_one_level_past_the_hardest_level_solved(measured, top):
    assert frontier(measured, 5, floor=0.02) == top
    w = level_weights(measured, 5, floor=0.02)
    assert all(w[lv] > 0 for lv in range(1, top + 1))
    assert all(w[lv] == 0 for lv in range(top + 1, 6))


def test_curriculum_down_weights_too_easy_and_impossible():
    w = level_weights({1: 1.0, 2: 0.5, 3: 0.0}, 3, floor=0.02)
    assert w[2] > 10 * w[1] and w[2] > 10 * w[3]
    assert w[1] == pytest.approx(w[3])


def test_mix_moves_up_as_the_model_improves():
    def mean_level(measured):
        w = level_weights(measured, 5, 0.02)
        return sum(lv * x for lv, x in w.items())

    weak = mean_level({1: 0.3, 2: 0.05, 3: 0.0})
    mid = mean_level({1: 0.9, 2: 0.5, 3: 0.1})
    strong = mean_level({1: 1.0, 2: 0.95, 3: 0.8})
    assert weak < mid < strong


# -- mixing helpers ------------------------------------------------------------------------------
def test_quotas_split_by_weight_and_sum_to_total():
    q = quotas({"generator": 0.5, "failures": 0.25, "mutations": 0.25, "proposed": 0.0}, 10)
    assert q == {"generator": 5, "failures": 3, "mutations": 2, "proposed": 0} or q == {
        "generator": 5,
        "failures": 2,
        "mutations": 3,
        "proposed": 0,
    }
    assert sum(quotas({"a": 1, "b": 1, "c": 1}, 100).values()) == 100
    assert quotas({"a": 0.0}, 5) == {"a": 0}


def test_weighted_sample_prefers_heavy_items():
    rng = random.Random(0)
    picks = Counter()
    for _ in range(2000):
        picks.update(weighted_sample(["a", "b", "c"], {"a": 8, "b": 1, "c": 0}.get, 1, rng))
    assert picks["a"] > 6 * picks["b"] and picks["c"] == 0
    assert weighted_sample(["a", "b", "c"], {"a": 8, "b": 1, "c": 0}.get, 3, rng)[-1] == "c"


def test_failure_pool_threshold():
    seeds = [Seed(str(i), f"{i}+1", str(i + 1)) for i in range(4)]
    rates = {"0": 0.0, "1": 0.25, "2": 0.5, "3": 0.75}
    assert [s.id for s in failure_pool(seeds, rates, 0.5)] == ["0", "1", "2"]
    assert [s.id for s in failure_pool(seeds, rates, 0.0)] == ["0"]


# -- the arith domain's hooks --------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,expected",
    [
        ("13-4+17", ("13-4+17", "26", 2)),
        (" 5 + 7 ", ("5+7", "12", 1)),
        ("1+2+3+4+5+6", ("1+2+3+4+5+6", "21", 5)),
        ("7", None),  # one operand: not a problem
        ("5+", None),
        ("1+2+3+4+5+6+7", None),  # more steps than any level
        ("1000+1", None),  # operand too large
        ("2*3", None),  # outside the generator's grammar
        ("hello", None),
        ("", None),
    ],
)
def test_read_problem_keeps_only_answerable_problems(text, expected):
    seed = read_problem(text, "proposed")
    got = None if seed is None else (seed.question, seed.answer, seed.difficulty)
    assert got == expected
    if seed is not None:
        assert seed.origin == "proposed" and int(seed.answer) == evaluate(seed.question)


def test_mutate_makes_a_harder_correct_variant():
    rng = random.Random(0)
    for s in make_seeds(ARITH, 200, [1, 2, 3, 4, 5], rng, set()):
        m = mutate(s, rng)
        assert m.origin == "mutations" and int(m.answer) == evaluate(m.question)
        assert m.difficulty == min(s.difficulty + 1, 5)
        assert m.question != s.question
        assert len(m.question.replace("-", "+").split("+")) >= len(
            s.question.replace("-", "+").split("+")
        )


# -- model prompts -------------------------------------------------------------------------------
def test_problem_text_reads_continuations_and_answers():
    assert problem_text("Q: 13-", "4+5\n<think>x</think>", "Q: ") == "13-4+5"
    assert problem_text("Make it harder:", " Q: 5+7<think>", "Q: ") == "5+7"
    assert problem_text("no marker", "8+1\nmore", "Q: ") == "8+1"


def test_model_prompts_rewrite_failures_and_propose_from_solved():
    seeds = [Seed(f"s{i}", f"{10 + i}-4+7", "x", 2) for i in range(20)]
    rates = {f"s{i}": (0.0 if i < 10 else 0.75) for i in range(20)}
    prompts = model_prompts(
        seeds,
        rates,
        {"rewrites": 4, "proposed": 4},
        failure_below=0.5,
        floor=0.02,
        rewrite_template="Q: {prefix}",
        propose_template="Example: {question}\nQ: {head}",
        samples=2,
        oversample=2.0,
        rng=random.Random(0),
    )
    kinds = Counter(p.kind for p in prompts)
    assert kinds == {"rewrites": 4, "proposed": 4}
    for p in prompts:
        i = int(p.source_id[1:])
        if p.kind == "rewrites":
            assert i < 10 and p.prompt == f"Q: {10 + i}-4"
        else:
            assert i >= 10 and p.prompt == f"Example: {10 + i}-4+7\nQ: {10 + i}"
    assert len({p.prompt for p in prompts}) == len(prompts)


# -- evolve: every source and the mix ------------------------------------------------------------
def _evolve(sources, model_seeds=None, keep_original=0.1, count=200):
    suite = {s.question for s in eval_suite(ARITH, 128)}
    rng = random.Random(0)
    first = make_seeds(ARITH, 200, [1, 2, 3], rng, suite, origin="generator")
    rates = {s.id: {1: 0.9, 2: 0.4, 3: 0.0}[s.difficulty] for s in first}
    nxt = evolve(
        first,
        rates,
        first,
        ARITH,
        count=count,
        sources=sources,
        keep_original=keep_original,
        failure_below=0.5,
        floor=0.02,
        rng=rng,
        exclude=suite,
        model_seeds=model_seeds,
    )
    return nxt, first, rates, suite


def test_evolve_mixes_sources_by_weight_outside_the_suite():
    nxt, first, rates, suite = _evolve({"generator": 0.5, "failures": 0.25, "mutations": 0.25})
    assert len(nxt.seeds) == 200 and len({s.question for s in nxt.seeds}) == 200
    assert nxt.counts == Counter(s.origin for s in nxt.seeds)
    assert nxt.counts["original"] == 20
    assert (nxt.counts["failures"], nxt.counts["mutations"]) in ((45, 45),)
    assert nxt.counts["generator"] == 90
    assert not suite & {s.question for s in nxt.seeds}
    failures = [s for s in nxt.seeds if s.origin == "failures"]
    assert all(rates[s.id] <= 0.5 for s in failures)
    # Half-solved failures (signal 0.24) outweigh never-solved ones (floor 0.02).
    by_rate = Counter(rates[s.id] for s in failures)
    assert by_rate[0.4] > by_rate[0.0]
    assert all(s.difficulty >= 2 for s in nxt.seeds if s.origin == "mutations")
    # The curriculum: level 2 (pass rate 0.4) is drawn most among fresh seeds.
    fresh = Counter(s.difficulty for s in nxt.seeds if s.origin == "generator")
    assert fresh.most_common(1)[0][0] == 2
    assert nxt.level_rates == pytest.approx({1: 0.9, 2: 0.4, 3: 0.0})


def test_evolve_takes_model_problems_and_fills_shortfalls_from_the_generator():
    proposed = [read_problem(f"{i}+{i}+1", "proposed") for i in range(30)]
    rewrites = [read_problem(f"{i}-3-1", "rewrites") for i in range(10, 15)]
    nxt, *_ = _evolve(
        {"generator": 0.2, "proposed": 0.4, "rewrites": 0.4},
        {"proposed": proposed, "rewrites": rewrites},
        keep_original=0.0,
        count=100,
    )
    assert nxt.counts == {"proposed": 30, "rewrites": 5, "generator": 65}
    assert nxt.short == {"proposed": 10, "rewrites": 35}
    assert len(nxt.seeds) == 100


def test_evolve_with_only_the_generator_and_no_anchor():
    nxt, *_ = _evolve({"generator": 1.0}, keep_original=0.0)
    assert nxt.counts == {"generator": 200}
