"""STaR's rationalization (Zelikman et al. 2022): which seeds are sampled again with the gold
answer as a hint, and which hinted completions may train. Pure; no I/O.

A seed is failed when the policy's samples of it all got a wrong answer from the domain's
answer check (`accuracy`); the generate stage samples it again through the same worker with
`sampling.rationalize.hint` showing the answer (`tasks.prompts.hint_questions`), and records
those samples with template `rationalize` and the plain prompt as their training prompt, so
the student learns to reach the answer without being told it.

Departures from the paper: STaR re-samples each failed problem once, greedily, and fine-tunes
from the base model on the union; here a failed seed gets `rationalize.n` samples at the
generation's temperature, pooled with the plain samples and curated like them, except that a
hinted sample is accepted only where the answer check accepts it whatever the configured rewards
are (`must_verify`): a judge or a format rule alone cannot tell a rationalization from a copied
answer. Hinted samples do not count in a seed's pass rate: it measures the policy unaided
(seed evolution and the curriculum read it).
"""

from __future__ import annotations

from collections import defaultdict

from tasks.records import Sample, Seed, Verdict
from tasks.rewards import accuracy_verdicts

RATIONALIZE = "rationalize"
"""The template a hinted sample records (`Sample.template`); not one of `tasks.prompts.TEMPLATES`:
the hint needs the gold answer, which only this pass hands the worker."""


def answer_checks(samples: list[Sample], domain: str) -> list[Verdict]:
    """The domain's answer check (the `accuracy` reward's verdicts) of each sample."""
    return accuracy_verdicts(
        [s.completion for s in samples], [s.answer for s in samples], domain=domain
    )


def failed_seeds(seeds: list[Seed], samples: list[Sample], domain: str) -> list[Seed]:
    """The seeds to rationalize, in `seeds` order: those with a gold answer, sampled in
    `samples` (the policy's), and every sample of them rejected by the answer check. A seed
    with an `infra_error` among its checks is not failed: a broken verifier says nothing."""
    outcomes: dict[str, set[str]] = defaultdict(set)
    for s, v in zip(samples, answer_checks(samples, domain), strict=True):
        outcomes[s.seed_id].add(v.outcome)
    return [s for s in seeds if s.answer is not None and outcomes.get(s.id) == {"reject"}]


def must_verify(verdict: Verdict, check: Verdict) -> Verdict:
    """A hinted sample's curation verdict: as curated, unless that accepts and the answer check
    (`check`) does not; then the check's outcome (a reject, or an infra_error that keeps it
    out without counting against it) with the reason `rationalize:accuracy:<reason>`."""
    if verdict.outcome != "accept" or check.outcome == "accept":
        return verdict
    return Verdict(check.outcome, f"{RATIONALIZE}:accuracy:{check.reason}")


def verified(samples: list[Sample], domain: str) -> int:
    """How many of `samples` the answer check accepts."""
    return sum(v.outcome == "accept" for v in answer_checks(samples, domain))
