"""Preference pairs from curation verdicts: same seed on both sides, accepted vs rejected with
their reasons, never an infra_error, deterministic under a seed, capped per seed."""

from __future__ import annotations

import pytest

from tasks.preference import preference_pairs
from tasks.records import Sample, Verdict

ACCEPT = Verdict("accept", "all_rewards_passed")
WRONG = Verdict("reject", "accuracy:wrong_answer")
BROKEN = Verdict("reject", "format:no_answer_tag")
LONG = Verdict("reject", "truncated")
INFRA = Verdict("infra_error", "accuracy:verifier_crashed")


def _samples(spec: dict[str, list[Verdict]]) -> tuple[list[Sample], dict[str, Verdict]]:
    """Samples per seed with the given verdicts; completion i of seed s is `s-i`."""
    samples, verdicts = [], {}
    for seed, outcomes in spec.items():
        for i, v in enumerate(outcomes):
            s = Sample(
                f"{seed}#{i}", seed, f"Q: {seed}\n", f"{seed}-{i}", "3", 1, i, "m", 5, "stop"
            )
            samples.append(s)
            verdicts[s.id] = v
    return samples, verdicts


def test_pairs_join_an_accepted_and_a_rejected_sample_of_one_seed():
    samples, verdicts = _samples(
        {"a": [ACCEPT, WRONG, BROKEN, INFRA], "b": [WRONG, LONG], "c": [ACCEPT, ACCEPT]}
    )
    pairs = preference_pairs(samples, verdicts, per_seed=8, seed=0)
    assert {p.seed_id for p in pairs} == {"a"}  # b has nothing accepted, c nothing rejected
    assert len(pairs) == 2
    for p in pairs:
        assert p.prompt == "Q: a\n"
        assert verdicts[p.chosen_id] == ACCEPT and p.chosen_reason == "all_rewards_passed"
        assert verdicts[p.rejected_id].outcome == "reject"
        assert p.rejected_reason == verdicts[p.rejected_id].reason
        assert p.chosen == samples[[s.id for s in samples].index(p.chosen_id)].completion
    assert {p.rejected_id for p in pairs} == {"a#1", "a#2"}  # never the infra_error


def test_the_cap_per_seed_and_no_repeated_pair():
    samples, verdicts = _samples({"a": [ACCEPT] * 3 + [WRONG] * 5, "b": [ACCEPT, WRONG]})
    for cap, want in ((2, 2), (5, 5), (50, 5)):  # at most max(accepted, rejected) per seed
        pairs = [p for p in preference_pairs(samples, verdicts, cap, 0) if p.seed_id == "a"]
        assert len(pairs) == want
        assert len({(p.chosen_id, p.rejected_id) for p in pairs}) == want
        if want >= 3:  # every accepted sample serves before one repeats
            assert len({p.chosen_id for p in pairs}) == 3


def test_deterministic_under_a_seed_and_independent_of_order_and_other_seeds():
    spec = {f"s{k}": [ACCEPT] * 4 + [WRONG] * 4 for k in range(20)}
    samples, verdicts = _samples(spec)
    first = preference_pairs(samples, verdicts, 2, seed=7)
    assert preference_pairs(list(reversed(samples)), verdicts, 2, seed=7) == sorted(
        first, key=lambda p: -int(p.seed_id[1:])
    )
    assert preference_pairs(samples, verdicts, 2, seed=8) != first
    alone = [s for s in samples if s.seed_id == "s3"]
    assert preference_pairs(alone, verdicts, 2, seed=7) == [p for p in first if p.seed_id == "s3"]


def test_a_copy_of_an_accepted_text_is_never_rejected_and_copies_count_once():
    samples, verdicts = _samples({"a": [ACCEPT, WRONG, WRONG]})
    samples[1] = Sample("a#1", "a", "Q: a\n", " a-0 ", "3", 1, 1, "m", 5, "stop")  # judge split
    samples[2] = Sample("a#2", "a", "Q: a\n", "a-0", "3", 1, 2, "m", 5, "stop")
    assert preference_pairs(samples, verdicts, 4, 0) == []


def test_bad_arguments_are_named():
    samples, verdicts = _samples({"a": [ACCEPT, WRONG]})
    with pytest.raises(ValueError, match="per_seed"):
        preference_pairs(samples, verdicts, 0, 0)
    with pytest.raises(ValueError, match="no verdict.*'a#1'"):
        preference_pairs(samples, {"a#0": ACCEPT}, 1, 0)
