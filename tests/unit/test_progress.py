"""Progress in a log: plain lines at most once per EVERY_S seconds and per EVERY_SHARE of the
work (whichever is rarer), plus the last step; nothing extra on a terminal."""

from __future__ import annotations

import pytest

from tasks.progress import LineThrottle, LineTqdm, every_s, loss_bar, progress_line


def lines_due(total, times, every_s=10.0, every_share=0.05):
    """The steps (1..len(times)) that get a line when step i ends at times[i-1]."""
    throttle = LineThrottle(total, 0.0, every_s, every_share)
    return [i for i, t in enumerate(times, 1) if throttle.due(i, t)]


def test_a_fast_stage_writes_only_its_last_step():
    assert lines_due(1000, [i * 0.001 for i in range(1, 1001)]) == [1000]


def test_a_slow_stage_is_bounded_by_the_share_of_work():
    # one step per minute: time alone would print every step; 5 % of 100 steps is every 5th
    assert lines_due(100, [60.0 * i for i in range(1, 101)]) == list(range(5, 101, 5))


def test_a_long_stage_is_bounded_by_time():
    # 10,000 steps of 0.05 s: 5 % is 500 steps = 25 s, above 10 s, so every 500th step
    due = lines_due(10_000, [0.05 * i for i in range(1, 10_001)])
    assert due == list(range(500, 10_001, 500))
    # 1 s a step, 200 steps: 5 % is 10 steps = 10 s: both bounds meet
    assert lines_due(200, [1.0 * i for i in range(1, 201)]) == list(range(10, 201, 10))


def test_the_count_of_lines_never_exceeds_one_per_share_plus_the_last():
    for total in (1, 7, 35, 1200):
        due = lines_due(total, [100.0 * i for i in range(1, total + 1)])
        assert len(due) <= 21 and due[-1] == total


def test_unknown_total_is_bounded_by_time_only():
    assert lines_due(None, [3.0 * i for i in range(1, 11)]) == [4, 8]


def test_the_last_step_prints_once_even_when_updated_again():
    throttle = LineThrottle(10, 0.0)
    assert throttle.due(10, 1.0) and not throttle.due(10, 100.0)


def test_the_line_reads_like_the_bar():
    line = progress_line("bootstrap pretraining", 120, 600, {"loss": "2.345"}, 70.2, 280.0)
    assert line == "bootstrap pretraining: 120/600 (20 %) loss 2.345, 0:01:10 elapsed, 0:04:40 left"
    assert progress_line("x", 3, None, {"loss": "-"}, None, None) == (
        "x: 3, -:--:-- elapsed, -:--:-- left"
    )


def test_a_bar_whose_output_is_not_a_terminal_prints_its_due_lines(capsys):
    clock = iter(float(t) for t in range(0, 10_000, 20))  # 20 s per reading
    bar = loss_bar("pretraining", get_time=lambda: next(clock))
    with bar:
        task = bar.add_task("pretraining", total=40, loss="-")
        for step in range(40):
            bar.update(task, advance=1, loss=f"{1.0 / (step + 1):.3f}")
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("pretraining: ")]
    assert [x.split()[1] for x in lines] == [f"{i}/40" for i in range(2, 41, 2)]
    assert "loss 0.025" in lines[-1] and "(100 %)" in lines[-1]


def test_a_disabled_bar_prints_nothing(capsys):
    with loss_bar("quiet", enabled=False) as bar:
        task = bar.add_task("quiet", total=3, loss="-")
        for _ in range(3):
            bar.advance(task)
    assert capsys.readouterr().out == ""


def test_vllms_bar_in_a_log_writes_whole_lines(capsys):
    bar = LineTqdm(total=5, desc="Processed prompts")
    for _ in range(5):
        bar.update(1)
    bar.close()
    out = capsys.readouterr().out
    assert "\r" not in out and out.count("\n") == 1 and "5/5" in out


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_PROGRESS_EVERY_S", "60")
    assert every_s() == 60.0
    monkeypatch.delenv("FLYWHEEL_PROGRESS_EVERY_S")
    assert every_s() == 10.0
    monkeypatch.setenv("FLYWHEEL_PROGRESS_EVERY_S", "soon")
    with pytest.raises(ValueError, match="FLYWHEEL_PROGRESS_EVERY_S='soon'"):
        every_s()
