from tasks.plots import pass1_interval, trajectory_png


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
