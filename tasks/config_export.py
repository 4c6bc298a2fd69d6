"""The `export` section: what `flywheel export` writes beside a generation's data (the dataset
card's license) and how it draws preference pairs (`tasks.preference`)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from tasks.config_generation import Section


class ExportFormat(StrEnum):
    """TRL's dataset formats an export writes (`tasks.export`)."""

    messages = "messages"
    prompt_completion = "prompt-completion"
    preference = "preference"


class ExportConfig(Section):
    """`flywheel export`: a generation's curated samples as a dataset with a card."""

    license: str = Field(
        "other",
        pattern=r"^[a-z0-9][a-z0-9.+-]*$",
        description="The dataset card's license, a Hub identifier (apache-2.0, cc-by-4.0, mit, "
        "other, ...): the samples inherit the policy's and the seeds' terms.",
    )
    pairs_per_seed: int = Field(4, gt=0, description="Most preference pairs drawn per seed.")
    pair_seed: int = Field(0, description="Seed of the preference pairs' draw.")
