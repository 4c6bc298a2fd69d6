"""The collapse alarm as a gate guard: a diversity drop beyond its limit blocks promotion."""

import random

from tasks.gate import decide, with_alarms
from tasks.hygiene import collapse_checks, diversity


def completions(distinct: int, total: int = 200) -> list[str]:
    rng = random.Random(distinct)
    pool = []
    for _ in range(distinct):
        a, b = rng.randrange(100), rng.randrange(100)
        pool.append(f"<think>{a}+{b}={a + b}</think><answer>{a + b}</answer>")
    return [pool[i % distinct] for i in range(total)]


LIMITS = {"distinct_2": 0.3, "answer_entropy": 0.3, "self_similarity": 1.0}


def test_collapsed_challenger_is_blocked():
    promote = decide({"pass@1": 0.2}, {"pass@1": 0.3}, "pass@1", 0.0, 4)
    assert promote.promote
    checks = collapse_checks(diversity(completions(200)), diversity(completions(5)), LIMITS)
    guards = {f"collapse.{k}": v for k, v in checks.items()}
    d = with_alarms(promote, guards)
    assert not d.promote
    assert d.rule == "guard:collapse.distinct_2"
    assert d.reason.startswith("blocked by guard collapse.distinct_2: distinct_2 fell")
    assert set(d.guards) == set(guards) and "reason" not in d.guards["collapse.distinct_2"]
    assert not d.guards["collapse.answer_entropy"]["ok"]


def test_healthy_challenger_passes_and_guards_are_recorded():
    promote = decide({"pass@1": 0.2}, {"pass@1": 0.3}, "pass@1", 0.0, 4)
    checks = collapse_checks(diversity(completions(200)), diversity(completions(190)), LIMITS)
    d = with_alarms(promote, {f"collapse.{k}": v for k, v in checks.items()})
    assert d.promote and d.rule == "promote"
    assert all(g["ok"] for g in d.guards.values()) and len(d.guards) == 3


def test_a_rejected_challenger_keeps_its_own_reason():
    keep = decide({"pass@1": 0.3}, {"pass@1": 0.2}, "pass@1", 0.0, 4)
    checks = collapse_checks(diversity(completions(200)), diversity(completions(5)), LIMITS)
    d = with_alarms(keep, {f"collapse.{k}": v for k, v in checks.items()})
    assert not d.promote and d.rule == keep.rule and d.reason == keep.reason
    assert with_alarms(keep, {}) == keep
