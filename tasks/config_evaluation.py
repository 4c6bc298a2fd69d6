"""The flywheel config's measuring sections: the frozen eval suite, the promotion gate and the
judge."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    Field,
    model_validator,
)

from tasks.config_generation import Section


class GuardSuite(Section):
    """An extra frozen suite whose pass@1 the challenger may not lose (a gate guard)."""

    levels: list[int] = Field(min_length=1, description="Difficulty levels it draws from.")
    size: int = Field(128, gt=0, description="Items in the suite.")
    max_drop: float = Field(
        0.02, ge=0, le=1, description="Largest allowed pass@1 drop against the champion."
    )
    greedy: bool = Field(
        False,
        description="Also guard this suite's greedy pass@1 (needs eval.greedy), by the main "
        "suite's greedy rule: a drop past gate.greedy_tolerance whose paired bootstrap upper "
        "bound is below 0 blocks promotion. A suite of harder levels shows losses that the "
        "main suite's many easy items hide.",
    )


class EvalConfig(Section):
    """The frozen evaluation. k, temperature, max_tokens and seed are frozen with the suite on
    a flywheel's first run: a later run that changes one is refused (per-item results sampled
    differently do not pair in the gate)."""

    suite_size: int = Field(512, gt=0, description="Items in the frozen held-out suite.")
    k: int = Field(8, gt=0, le=64, description="Samples per item (pass@k, maj@k).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature for evaluation.")
    max_tokens: int = Field(96, gt=0, description="Longest completion in tokens.")
    seed: int = Field(1234, description="Evaluation sampling seed (fixed across generations).")
    greedy: bool = Field(
        True,
        description="Also score one greedy sample (T=0, same suite and max_tokens) per item: "
        "the `greedy_pass@1` metric and the gate's greedy guard. Costs a second engine start.",
    )
    extra_suites: dict[str, GuardSuite] = Field(
        default_factory=dict,
        description="Named extra suites (e.g. `hard: {levels: [5]}`), frozen with the main one and "
        "evaluated with it; a pass@1 drop past max_drop blocks promotion.",
    )

    @model_validator(mode="after")
    def _suite_names(self) -> EvalConfig:
        bad = [n for n in self.extra_suites if not re.fullmatch(r"[a-z0-9_]+", n)]
        if bad:
            raise ValueError(f"extra_suites names must be lowercase letters, digits, _: {bad}")
        greedy = [n for n, s in self.extra_suites.items() if s.greedy]
        if greedy and not self.greedy:
            raise ValueError(
                f"extra_suites.{greedy[0]}.greedy guards greedy pass@1, which eval.greedy: false "
                "turns off; set eval.greedy: true or drop the suite's greedy guard"
            )
        return self


class GateConfig(Section):
    test: Literal["margin", "paired_bootstrap"] = Field(
        "paired_bootstrap",
        description="`paired_bootstrap` (default): the one-sided (1 - alpha) lower bound of the "
        "paired per-item gain must beat margin, and no guard metric may regress; `margin` "
        "(opt-in): the challenger's point estimate must beat the champion's by more than margin "
        "(with margin 0 it promotes an equal challenger about half the time).",
    )
    metric: Literal["pass@1", "pass@k", "maj@k"] = Field("pass@1", description="What decides.")
    margin: float = Field(0.0, ge=0, le=1, description="Challenger must beat champion by more.")
    alpha: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="One-sided level of the gain's lower bound (and the greedy guard's upper one).",
    )
    n_boot: int = Field(2000, ge=100, description="Bootstrap replicates.")
    seed: int = Field(0, description="Bootstrap seed.")
    guards: dict[Literal["format_rate", "mean_tokens", "truncation_rate"], float] = Field(
        default_factory=lambda: {"format_rate": 0.02, "mean_tokens": 0.25, "truncation_rate": 0.02},
        description="Largest allowed regression per guard (mean_tokens relative); {} turns "
        "guards off. Used by paired_bootstrap.",
    )
    greedy_tolerance: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Greedy guard (both tests; needs eval.greedy): block promotion when the "
        "challenger's greedy pass@1 falls by more than this AND the paired bootstrap (1 - alpha) "
        "upper bound of its change is below 0. Skipped, with a note, when either eval has no "
        "greedy results.",
    )

    approval: bool = Field(
        False,
        description="Pause for a person's approval (Prefect UI input) before a promotion the "
        "test allows; a refusal keeps the champion.",
    )
    approval_timeout: int = Field(
        86400,
        gt=0,
        description="Seconds to wait for the approval; then the run fails and a rerun asks again.",
    )

    @model_validator(mode="after")
    def _guards_non_negative(self) -> GateConfig:
        bad = {k: v for k, v in self.guards.items() if v < 0}
        if bad:
            raise ValueError(f"guards must be >= 0, got {bad}")
        return self


class JudgeConfig(Section):
    """The generative judge: used in curation when `judge` is one of `curation.rewards`."""

    rubric: str = Field(
        "arith_v1", description="Rubric name under configs/judges/ (or a path to a rubric file)."
    )
    model: str = Field(
        "bootstrap", description="Judge checkpoint path, or `bootstrap` for the tiny default."
    )
    backend: Literal["vllm", "hf", "openai", "ray"] = Field(
        "vllm",
        description="Judge backend; `openai`: an OpenAI-compatible server (model = name); `ray`: "
        "vLLM replicas on the engine's Ray cluster (engine.ray_address, replicas, ...).",
    )
    k: int = Field(3, gt=0, le=32, description="Judge samples per candidate (majority vote).")
    temperature: float = Field(
        0.3, ge=0, description="Judge sampling temperature (0.3: a k-vote of near-greedy reads)."
    )
    max_tokens: int = Field(96, gt=0, description="Longest judge output in tokens.")
    max_candidate_chars: int | None = Field(
        None,
        gt=0,
        description="Candidate text beyond this is cut before judging (None: 160 for the "
        "bootstrap judge, else derived from max_model_len - max_tokens; see candidate_chars).",
    )
    max_error_share: float = Field(
        0.5, ge=0, lt=1, description="Share of unparsable votes above which a vote is infra_error."
    )
    max_infra_error_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Largest share of a generation's judge votes that may be infra_error "
        "(timeouts, HTTP 5xx/429 after the retries, unreadable replies, ties); above it the "
        "curate stage stops with an error instead of training on what the judge could read.",
    )
    combine: Literal["rules_then_judge", "both", "judge_only"] = Field(
        "rules_then_judge",
        description="How the answer check and the judge combine: `rules_then_judge`: the "
        "accuracy rule where the sample has a gold answer, the judge for the rest; `both`: "
        "both must accept; `judge_only`: the judge alone checks the answer. Every other rule "
        "(format, truncation, length, repetition, ...) rejects in every mode.",
    )
    max_model_len: int = Field(384, ge=32, description="Judge prompt + output in tokens.")
    seed: int = Field(0, description="Judge sampling and nonce seed.")
    steps: int = Field(1200, ge=0, description="Pretraining steps of the bootstrap judge.")
    batch_size: int = Field(32, gt=0, description="Documents per bootstrap-judge step.")
    policy_samples: int = Field(
        2048,
        ge=0,
        description="Base-policy samples on training questions, labelled by the rules, that the "
        "bootstrap judge also trains on (0: synthetic corruptions only).",
    )
    qc_sample: int | None = Field(
        None,
        gt=0,
        description="Candidates per generation judged only to measure the judge (QC), a seeded "
        "random draw (judge.seed + generation) among those whose verdict the rules decide; the "
        "judge always sees every candidate it decides (None: judge every candidate).",
    )

    def candidate_chars(self) -> int:
        """The candidate cut in characters: `max_candidate_chars`, or derived from the judge's
        context when unset (`tasks.judge.candidate_char_limit`)."""
        from tasks.judge import candidate_char_limit, load_rubric

        return candidate_char_limit(
            self.max_candidate_chars,
            embedded=self.model == "bootstrap" and self.backend != "openai",
            max_model_len=self.max_model_len,
            max_tokens=self.max_tokens,
            template=load_rubric(self.rubric).template,
        )
