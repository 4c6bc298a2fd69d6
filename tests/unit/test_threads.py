"""The torch thread rule: a setting wins, then OMP_NUM_THREADS, then the cores free now."""

from __future__ import annotations

import pytest

from tasks.threads import ThreadChoice, choose_threads, decide, omp_threads


@pytest.mark.parametrize(
    ("cores", "busy", "threads"),
    [
        (2, 0.0, 2),  # idle laptop: every core
        (2, 0.2, 2),  # a little background work leaves both
        (2, 0.3, 1),  # a core 30 % taken is not free: its thread would stall the other
        (2, 0.8, 1),
        (2, 1.9, 1),  # two busy loops: one thread, never zero
        (2, 2.0, 1),
        (2, 5.0, 1),  # load above the core count
        (8, 3.0, 5),
        (8, 3.5, 4),  # half a core free is not a core
        (8, 3.2, 5),  # a core 80 % free counts (margin 0.25)
        (1, 0.0, 1),
        (4, -1.0, 4),  # a nonsensical negative reading counts as idle
    ],
)
def test_free_cores_rounded_towards_fewer_threads(cores, busy, threads):
    assert choose_threads(cores, busy) == threads


def test_a_setting_wins_then_omp_then_the_free_cores():
    assert decide(3, "train.cpu_threads", "1", 2, 1.9) == ThreadChoice(3, "train.cpu_threads")
    assert decide(None, "train.cpu_threads", "1", 8, None) == ThreadChoice(1, "OMP_NUM_THREADS")
    assert decide(None, "x", None, 2, 1.94) == ThreadChoice(1, "2 cores, load 1.9")
    assert decide(None, "x", "", 2, 0.04) == ThreadChoice(2, "2 cores, load 0.0")


def test_the_line_names_the_count_and_why():
    line = decide(None, "bootstrap.cpu_threads", None, 2, 1.9).line()
    assert line == "torch threads: 1 (2 cores, load 1.9)"
    assert decide(2, "bootstrap.cpu_threads", None, 2, None).line() == (
        "torch threads: 2 (bootstrap.cpu_threads)"
    )


@pytest.mark.parametrize(
    ("value", "threads"),
    [("4", 4), (" 2 ", 2), ("0", None), ("-1", None), ("two", None), (None, None)],
)
def test_omp_num_threads_counts_only_as_a_positive_integer(value, threads):
    assert omp_threads(value) == threads


def test_a_setting_below_one_is_an_error_naming_it():
    with pytest.raises(ValueError, match="train.cpu_threads must be >= 1, got 0"):
        decide(0, "train.cpu_threads", None, 2, 0.0)
