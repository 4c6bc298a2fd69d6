"""Typed records that cross stage boundaries, and their deterministic ids.

Stages hand each other files (Parquet / JSONL); these dataclasses are the rows of those files.
Ids derive from content only, so a rerun of a stage writes byte-identical ids and a resumed run
can never duplicate a sample.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

Outcome = Literal["accept", "reject", "infra_error"]


def stable_hash(*parts: Any, length: int = 16) -> str:
    """SHA-256 of the JSON of `parts`, hex, truncated: the one id function."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Seed:
    """A prompt the flywheel samples from. `answer` is the gold answer, if the domain has one."""

    id: str
    question: str
    answer: str | None
    difficulty: int = 1
    # file | dataset | generator | original | failures | mutations | rewrites | proposed | eval
    origin: str = "generated"

    @classmethod
    def make(
        cls, question: str, answer: str | None, difficulty: int = 1, origin: str = "generated"
    ):
        return cls(stable_hash("seed", question), question, answer, difficulty, origin)


@dataclass(frozen=True)
class Sample:
    """One completion of one seed by one model (`model`: the generator, policy or teacher).

    `prompt` is what a student trains on: the question in the policy's own prompt format.
    """

    id: str
    seed_id: str
    prompt: str
    completion: str
    answer: str | None
    difficulty: int
    sample_index: int
    model: str
    num_tokens: int
    finish_reason: str  # stop | length
    # The prompt template the generator saw (tasks.prompts.TEMPLATES), or `rationalize`: the
    # plain prompt with the gold answer as a hint (tasks.rationalize); `prompt` never has it.
    template: str = "plain"

    @staticmethod
    def make_id(generation: int, seed_id: str, index: int, model: str, params: dict) -> str:
        return stable_hash("sample", generation, seed_id, index, model, params)


@dataclass(frozen=True)
class Verdict:
    """What a verifier or judge said of one sample. infra_error is never a wrong answer."""

    outcome: Outcome
    reason: str


@dataclass(frozen=True)
class Completion:
    """What a generation backend returns for one sample."""

    text: str
    num_tokens: int
    finish_reason: str


def to_rows(records: list) -> list[dict]:
    return [asdict(r) for r in records]


def from_rows(cls, rows: list[dict]) -> list:
    names = {f.name for f in fields(cls)}
    return [cls(**{k: v for k, v in row.items() if k in names}) for row in rows]
