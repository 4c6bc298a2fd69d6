"""Fixtures shared by the integration tests that need the embedded judge."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.domains import DOMAINS, eval_suite

JUDGE_LEVELS = 3  # the embedded judge is trained and measured on levels 1..3


@pytest.fixture(scope="session")
def judge_suite():
    """Held-out questions: the frozen suite's, which the judge's bootstrap never shows."""
    return [s for s in eval_suite(DOMAINS["arith"], 512) if s.difficulty <= JUDGE_LEVELS]


@pytest.fixture(scope="session")
def judge_model(judge_suite, tmp_path_factory) -> Path:
    """The embedded judge, made once per session by its real bootstrap.

    It is cached by its recipe's hash: FLYWHEEL_TEST_MODELS names a folder kept between runs
    (a changed recipe trains a new judge there); unset, each session trains one.
    """
    from tasks.judge_bootstrap import bootstrap_judge

    root = Path(os.environ.get("FLYWHEEL_TEST_MODELS") or tmp_path_factory.mktemp("judge"))
    return bootstrap_judge(root, exclude={s.question for s in judge_suite}, progress=False)
