from tasks.lineage import generation_markdown

LINEAGE = {
    "generation": 3,
    "seeds": {"hash": "s", "count": 10, "origins": {}},
    "candidates": {"hash": "c", "samples": 80},
    "accepted": {"hash": "a", "samples": 7, "counts": {}},
    "training": {"train_rows": 12},
    "eval": {"pass@1": 0.25, "mean_tokens": 24.5, "items": 512.0},
    "gate": {
        "promote": False,
        "reason": "pass@1 0.2500 vs champion 0.2600",
        "metric": "pass@1",
        "champion": 0.26,
        "challenger": 0.25,
    },
}


def test_markdown_report_shows_decision_metrics_and_escaped_samples():
    accepted = [{"prompt": "Q: 1+2\n", "completion": "<think>1+2=3</think>", "reason": "ok"}]
    rejected = [{"prompt": "Q: 1|2\n", "completion": "a\nb", "reason": "accuracy:wrong"}]
    md = generation_markdown(LINEAGE, accepted, rejected)
    assert md.startswith("# Generation 3")
    assert "**kept the champion**" in md
    assert "| pass@1 | 0.2600 | 0.2500 |" in md
    assert "| mean_tokens | | 24.5 |" in md and "items" not in md
    assert "Seeds 10 → samples 80 → kept 7 → trained on 12" in md
    assert "`Q: 1\\|2` → `a ⏎ b` (accuracy:wrong)" in md


def _stage(gdir, stage, **outputs):
    from tasks import store

    with store.write_stage(gdir / stage, stage) as (_tmp, out):
        out.update(outputs)


DECISION = {
    "promote": True,
    "metric": "pass@1",
    "champion": 0.1,
    "challenger": 0.3,
    "delta": 0.2,
    "margin": 0.0,
    "reason": "better",
}
CURATE = {"counts": {"accept": 4}, "seed_solve_rate": 0.5, "hash": "h"}


def test_comparison_puts_generations_side_by_side_and_skips_unfinished(tmp_path):
    from tasks.lineage import comparison
    from tasks.outputs import load_flywheel

    fw = tmp_path / "fw"
    evaluated = {"model": "m", "params": {}}
    _stage(fw / "gen-0000", "eval", report={"pass@1": 0.1, "items": 8.0}, **evaluated)
    g1 = fw / "gen-0001"
    _stage(g1, "eval", report={"pass@1": 0.3, "items": 8.0}, **evaluated)
    _stage(g1, "curate", accept_rate=0.5, accepted=4, **CURATE)
    champion = {"model": "m", "report": {}, "generation": 0, "version": None}
    _stage(g1, "gate", decision=DECISION, champion=champion, challenger_version="1")
    _stage(fw / "gen-0002", "curate", accept_rate=0.6, accepted=5, **CURATE)  # eval unfinished

    columns, rows = comparison(load_flywheel(fw))
    assert columns == ["gen-0000", "gen-0001"]
    table = dict(rows)
    assert table["pass@1"] == [0.1, 0.3]
    assert table["curate.accept_rate"] == [None, 0.5]
    assert table["gate"] == [None, "promoted"]
    assert table["gate.delta"] == [None, 0.2]
    assert "items" not in table and "train.rows" not in table  # nothing recorded: no row
