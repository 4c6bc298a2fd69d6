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
