"""The benchmarks' pure helpers: ratios, goals, table rows, the JSON document, the registry."""

import json

import pytest

from bench.report import (
    BenchResult,
    Goal,
    Ratio,
    format_goal,
    format_value,
    ratio,
    result_filename,
    results_document,
    table_rows,
    unavailable,
)


@pytest.mark.parametrize(
    "num, den, want",
    [(3.0, 2.0, 1.5), (0.0, 4.0, 0.0), (1.0, 0.0, None), (1.0, -1.0, None), (None, 1.0, None)],
)
def test_ratio(num, den, want):
    assert ratio(num, den) == want


@pytest.mark.parametrize(
    "goal, value, met",
    [
        (Goal(">=", 1.0), 1.0, True),
        (Goal(">=", 1.0), 0.99, False),
        (Goal("<=", 0.03), 0.031, False),
        (Goal("<=", 0.03), 0.01, True),
        (Goal("<=", 0.03), None, None),
    ],
)
def test_goal(goal, value, met):
    assert goal.met(value) is met


@pytest.mark.parametrize(
    "r, status",
    [
        (Ratio("P1", "a", 2.0, Goal(">=", 1.0)), "met"),
        (Ratio("P1", "a", 0.5, Goal(">=", 1.0)), "not met"),
        (Ratio("P6", "a", 1.2), "report"),
        (unavailable("P4", "judge", "no module tasks.judge"), "not available"),
        (Ratio("P2", "a", None, note="failed: WorkerError"), "failed"),
    ],
)
def test_status(r, status):
    assert r.status == status


def test_formats_by_unit():
    share = Ratio("P2", "overhead", 0.0123, Goal("<=", 0.03), unit="%")
    assert (format_value(share), format_goal(share)) == ("1.23 %", "<= 3 %")
    times = Ratio("P1", "speed", 13.917, Goal(">=", 1.0))
    assert (format_value(times), format_goal(times)) == ("13.9x", ">= 1x")
    rate = Ratio("P3", "rate", 91314.2, Goal(">=", 50_000), unit="samples/s")
    assert (format_value(rate), format_goal(rate)) == ("91,314 samples/s", ">= 50,000 samples/s")
    assert format_value(Ratio("P7", "gain", 0.00732, unit="pass@1/gen")) == "0.00732 pass@1/gen"
    assert format_value(unavailable("P5", "packed", "no option")) == "-"


def test_rows_sorted_by_number_and_carry_detail_or_note():
    rows = table_rows(
        [
            Ratio("P10", "ten", 1.0),
            Ratio("P2", "two", 0.5, detail="a ÷ b"),
            unavailable("P4", "four", "no module tasks.judge"),
            Ratio("P2", "two again", 0.1),
        ]
    )
    assert [r[0] for r in rows] == ["P2", "P2", "P4", "P10"]
    assert rows[0][5] == "a ÷ b"
    assert rows[2][4:] == ("not available", "not available: no module tasks.judge")


def test_results_document_is_json_and_counts_statuses():
    results = [
        BenchResult("generate", [Ratio("P1", "speed", 2.0, Goal(">=", 1.0))], {"tok": 5}, 3.14159),
        BenchResult("judge", [unavailable("P4", "judge", "no module", Goal(">=", 5.0))]),
    ]
    doc = json.loads(json.dumps(results_document(results, {"cpu": "x"}, {"mode": "quick"})))
    assert doc["machine"] == {"cpu": "x"} and doc["meta"] == {"mode": "quick"}
    assert [r["key"] for r in doc["ratios"]] == ["P1", "P4"]
    assert doc["ratios"][0]["goal"] == ">= 1" and doc["ratios"][0]["status"] == "met"
    assert doc["summary"]["met"] == 1 and doc["summary"]["not available"] == 1
    assert doc["benchmarks"]["generate"] == {"seconds": 3.14, "details": {"tok": 5}}


def test_result_filename_is_safe():
    assert result_filename({"host": "a b/c", "gpu": []}, "20260101T000000Z") == (
        "20260101T000000Z-a-b-c-cpu.json"
    )
    assert result_filename({"host": "h", "gpu": ["H100"]}, "s").endswith("-h-gpu.json")


def test_registry_reports_missing_features_as_not_available(monkeypatch):
    from bench import run_all

    monkeypatch.setitem(
        run_all.BENCHMARKS,
        "judge",
        run_all.Benchmark(("P4",), run_all._module_missing("tasks.no_such_module"), None),
    )
    [res] = run_all.run(["judge"], "quick")
    assert [r.status for r in res.ratios] == ["not available"]
    assert "tasks.no_such_module" in res.ratios[0].note
    assert set(run_all.PLACEHOLDERS) >= {k for b in run_all.BENCHMARKS.values() for k in b.keys}


def test_registry_reports_a_crash_as_failed_and_goes_on(monkeypatch):
    from bench import run_all

    def boom(sizes):
        raise RuntimeError("engine died")

    monkeypatch.setitem(run_all.BENCHMARKS, "x", run_all.Benchmark(("P1",), run_all._always, boom))
    [res] = run_all.run(["x"], "quick")
    assert res.ratios[0].status == "failed" and "engine died" in res.ratios[0].note
