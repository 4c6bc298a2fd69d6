"""STaR's rationalization, its pure parts: which seeds are re-sampled, how the hint is shown
(to the generator only), and that curation keeps a hinted sample only when its answer verifies,
whatever the rewards say."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks import requests as rq
from tasks.config import FlywheelConfig, load_config
from tasks.curate import curate
from tasks.prompts import generator_prompts, hint_questions
from tasks.rationalize import RATIONALIZE, failed_seeds, must_verify, verified
from tasks.records import Sample, Seed, Verdict

OK = "<think>3+4=7</think><answer>7</answer>"
WRONG = "<think>3+4=8</think><answer>8</answer>"
PLAIN = rq.PromptSpec("Q: {question}\n", False, None)
HINT = FlywheelConfig().sampling.rationalize.hint


def sample(seed: str, completion: str, i: int = 0, template: str = "plain", answer="7"):
    return Sample(
        f"{seed}-{template}-{i}", seed, "Q: 3+4\n", completion, answer, 1, i, "m", 10, "stop",
        template,
    )  # fmt: skip


def test_failed_seeds_are_those_whose_every_sample_is_wrong():
    seeds = [
        Seed("all-wrong", "3+4", "7"),
        Seed("one-right", "3+4", "7"),
        Seed("no-gold", "3+4", None),
        Seed("unsampled", "3+4", "7"),
        Seed("bad-gold", "3+4", "07"),  # the verifier cannot judge it: infra_error, no failure
        Seed("no-answer", "3+4", "7"),
    ]
    samples = [
        sample("all-wrong", WRONG, 0),
        sample("all-wrong", WRONG, 1),
        sample("one-right", WRONG, 0),
        sample("one-right", OK, 1),
        sample("no-gold", WRONG, 0, answer=None),
        sample("bad-gold", WRONG, 0, answer="07"),
        sample("no-answer", "<think>3+4</think>", 0),  # no answer block: a reject
    ]
    failed = failed_seeds(seeds, samples, "arith")
    assert [s.id for s in failed] == ["all-wrong", "no-answer"]
    assert verified(samples, "arith") == 1


def test_the_hint_shows_the_answer_inside_the_prompt_format_and_only_to_the_generator():
    assert hint_questions(HINT, ["3+4", "9-2"], ["7", "7"]) == [
        "3+4\n(The answer is 7.)",
        "9-2\n(The answer is 7.)",
    ]
    shown, train = generator_prompts(None, None, ["3+4"], PLAIN, "plain", (HINT, ["7"]))
    assert shown == ["Q: 3+4\n(The answer is 7.)\n"]
    assert train == ["Q: 3+4\n"]
    # With an instruction template as well, the student's prompt is still the plain one.
    shown, train = generator_prompts(None, None, ["3+4"], PLAIN, "reflect", (HINT, ["7"]))
    assert shown[0].endswith("Q: 3+4\n(The answer is 7.)\n") and shown[0] != train[0]
    assert train == ["Q: 3+4\n"]
    # Without a hint nothing changes: the generator sees what the student trains on.
    assert generator_prompts(None, None, ["3+4"], PLAIN, "plain") == (["Q: 3+4\n"], ["Q: 3+4\n"])


@pytest.mark.parametrize(
    "hint,error",
    [
        ("{question}", r"hint must contain \{answer\}"),
        ("The answer is {answer}.", r"hint must contain \{question\}"),
        ("{question} {answer} {seed}", r"only \{question\} and \{answer\}"),
    ],
)
def test_a_hint_template_without_its_fields_is_refused(hint, error):
    with pytest.raises(ValidationError, match=error):
        FlywheelConfig(sampling={"rationalize": {"n": 2, "hint": hint}})


def test_rationalization_is_off_by_default_and_needs_the_policy():
    assert FlywheelConfig().sampling.rationalize.n == 0
    with pytest.raises(ValidationError, match=r"distill.include_policy"):
        FlywheelConfig(
            sampling={"rationalize": {"n": 2}},
            distill={"include_policy": False, "teachers": ["/t"]},
        )


def test_the_hinted_request_carries_the_hint_and_its_own_n_through_json():
    cfg = FlywheelConfig(sampling={"n": 8, "rationalize": {"n": 3}})
    sampling = rq.rationalize_sampling(cfg, 2)
    assert sampling == dataclasses.replace(rq.sampling_spec(cfg, 2), n=3)
    req = rq.generate_request(cfg, "/p", sampling, Path("q"), Path("o"), hint=HINT)
    assert req.hint == HINT and req.template == "plain"
    assert rq.from_json(rq.GenerateRequest, json.loads(json.dumps(rq.to_json(req)))) == req
    plain = rq.generate_request(cfg, "/p", rq.sampling_spec(cfg, 2), Path("q"), Path("o"))
    assert plain.hint is None


def test_must_verify_overrules_only_an_acceptance():
    accept, wrong = Verdict("accept", "judge:judge_accept"), Verdict("reject", "wrong")
    assert must_verify(accept, wrong) == Verdict("reject", "rationalize:accuracy:wrong")
    assert must_verify(accept, Verdict("accept", "correct")) == accept
    broken = Verdict("infra_error", "non_canonical_gold")
    assert must_verify(accept, broken).outcome == "infra_error"  # kept out, not a wrong answer
    truncated = Verdict("reject", "truncated")
    assert must_verify(truncated, Verdict("accept", "correct")) == truncated


@pytest.mark.parametrize(
    "rewards,combine",
    [
        (["format"], "rules_then_judge"),  # no answer check listed at all
        (["accuracy", "format", "judge"], "judge_only"),  # the judge alone decides
        (["format", "judge"], "both"),
    ],
)
def test_a_hinted_sample_is_kept_only_when_its_answer_verifies(rewards, combine):
    samples = [
        sample("s", WRONG, 0),  # plain, wrong: accepted where the rewards do not check answers
        sample("s", WRONG, 0, RATIONALIZE),  # hinted, wrong: never
        sample("s", OK, 1, RATIONALIZE),  # hinted, right: kept
    ]
    judge = [Verdict("accept", "judge_accept_3of3")] * 3  # the judge accepts everything
    r = curate(samples, rewards, "arith", 8, columns={"judge_verdict": judge}, combine=combine)
    outcomes = {(row["sample_id"], row["outcome"], row["reason"]) for row in r.rows}
    assert ("s-rationalize-0", "reject", "rationalize:accuracy:wrong") in outcomes
    assert [s.id for s in r.kept if s.template == RATIONALIZE] == ["s-rationalize-1"]
    assert all(s.prompt == "Q: 3+4\n" for s in r.kept)  # the training prompt has no hint
    assert r.counts["rationalize:reject"] == 1 and r.counts["rationalize:kept"] == 1
    # The pass rate is the policy's own: the plain sample alone (accepted here: no answer check).
    assert r.seed_pass_rate == {"s": 1.0}


def test_hinted_samples_do_not_count_in_a_seeds_pass_rate():
    samples = [sample("s", WRONG, 0), sample("s", WRONG, 1), sample("s", OK, 0, RATIONALIZE)]
    r = curate(samples, ["accuracy", "format"], "arith", 8)
    assert [s.template for s in r.kept] == [RATIONALIZE]
    assert r.seed_pass_rate == {"s": 0.0}
    assert "rationalize:kept" not in curate(samples[:2], ["accuracy"], "arith", 8).counts


def test_the_bench_lever_turns_it_on():
    from bench.bench_p7 import LEVERS

    bench = Path(__file__).resolve().parents[2] / "configs" / "bench.yaml"
    assert load_config(bench, **LEVERS["star"]).sampling.rationalize.n > 0
