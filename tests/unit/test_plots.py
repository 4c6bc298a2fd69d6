from tasks.plots import pass1_interval, trajectory_figure, trajectory_png


def test_trajectory_draws_every_panel_with_or_without_a_judge(tmp_path):
    base = {
        "generation": 0,
        "pass1": 0.1,
        "pass1_ci": 0.02,
        "mean_tokens": 30.0,
        "format_rate": 0.5,
    }
    gen1 = {
        **base,
        "generation": 1,
        "pass1": 0.2,
        "accept_rate": 0.3,
        "promoted": True,
        "judge_agreement": 0.7,
        "seed_difficulty": 2.0,
    }
    gen2 = {**gen1, "generation": 2, "promoted": False, "judge_agreement": None}
    for name, points in (("judged", [base, gen1, gen2]), ("rules", [base])):
        out = trajectory_png(points, tmp_path / f"{name}.png")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_pass1_interval_is_mean_and_normal_half_width():
    mean, half = pass1_interval([{"correct": 1, "n": 2}, {"correct": 1, "n": 2}])
    assert mean == 0.5 and half == 0.0


def _gen(g: int, **judge) -> dict:
    return {
        "generation": g,
        "pass1": 0.1 + 0.05 * g,
        "pass1_ci": 0.02,
        "mean_tokens": 30.0,
        "format_rate": 0.5,
        "accept_rate": 0.3 if g else None,
        "seed_difficulty": 2.0 if g else None,
        "promoted": None if g == 0 else g % 2 == 1,
        **judge,
    }


def _judge_panel(points: list[dict]) -> dict:
    """The judge panel's line labels with their y values, and its texts."""
    import matplotlib.pyplot as plt

    fig = trajectory_figure(points)
    ax = fig.axes[4]
    drawn = {ln.get_label(): list(ln.get_ydata()) for ln in ax.get_lines()}
    drawn["_text"] = [t.get_text() for t in ax.texts]
    plt.close(fig)
    return drawn


def test_judge_panel_shows_balanced_accuracy_and_kappa_with_intervals(tmp_path):
    judged = dict(
        judge_agreement=0.95,
        judge_balanced_accuracy=0.5,
        judge_balanced_accuracy_ci=(0.49, 0.51),
        judge_kappa=0.0,
        judge_kappa_ci=(0.0, 0.0),
    )
    better = {
        **judged,
        "judge_balanced_accuracy": 0.8,
        "judge_balanced_accuracy_ci": (0.7, 0.9),
        "judge_kappa": 0.35,
        "judge_kappa_ci": (0.14, 0.56),
    }
    points = [_gen(0), _gen(1, **judged), _gen(2, **better)]
    drawn = _judge_panel(points)
    out = trajectory_png(points, tmp_path / "judged.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert drawn["balanced accuracy"] == [0.5, 0.8]
    assert drawn["Cohen's kappa"] == [0.0, 0.35]
    assert drawn["agreement"] == [0.95, 0.95]
    assert drawn["_text"] == []  # measured


def test_judge_panel_reads_old_manifests_and_rules_only_runs(tmp_path):
    # An older run recorded agreement only; a rules-only run records no judge at all.
    old = [_gen(0), _gen(1, judge_agreement=0.7), _gen(2, judge_agreement=None)]
    drawn = _judge_panel(old)
    assert trajectory_png(old, tmp_path / "old.png").stat().st_size > 10_000
    assert drawn["agreement"] == [0.7] and "balanced accuracy" not in drawn
    undefined = dict(
        judge_balanced_accuracy=None, judge_balanced_accuracy_ci=(None, None), judge_kappa=None
    )
    drawn = _judge_panel([_gen(0), _gen(1, **undefined)])
    assert drawn["_text"] == ["not measured"]
