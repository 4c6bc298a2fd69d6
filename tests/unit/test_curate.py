from tasks.curate import curate, merge_pool, mix_replay
from tasks.records import Sample

OK = "<think>1+2=3</think><answer>3</answer>"


def sample(i, seed="s1", completion=OK, answer="3", tokens=10, finish="stop"):
    return Sample(f"id{i}", seed, "Q: 1+2\n", completion, answer, 1, i, "m", tokens, finish)


def test_accepts_correct_and_counts_reasons():
    samples = [
        sample(0),
        sample(1, completion="<think>1+2=4</think><answer>4</answer>"),
        sample(2, completion="3"),
        sample(3, answer=None),
        sample(4, completion="<think>1+2=3", finish="length"),
    ]
    r = curate(samples, ["accuracy", "format"], "arith", max_per_seed=4)
    assert [s.id for s in r.kept] == ["id0"]
    c = r.counts
    assert (c["accept"], c["reject"], c["infra_error"]) == (1, 3, 1)
    assert c["reject:accuracy:wrong"] == 1
    assert c["reject:accuracy:no_answer"] == 1
    assert c["reject:truncated"] == 1
    assert c["infra_error:accuracy:no_gold_answer"] == 1
    assert r.seed_pass_rate == {"s1": 0.2}


def test_dedup_and_cap_prefer_short():
    long_ok = "<think>1+2=3\n3=3</think><answer>3</answer>"
    samples = [
        sample(0, completion=long_ok, tokens=20),
        sample(1),
        sample(2),
        sample(3, completion=" " + OK, tokens=11),
    ]
    r = curate(samples, ["accuracy", "format"], "arith", max_per_seed=1)
    assert [s.id for s in r.kept] == ["id1"]
    assert r.counts["dropped:duplicate"] == 2  # id2 and the whitespace variant id3
    assert r.counts["dropped:over_cap"] == 1
    assert sum(row["kept"] for row in r.rows) == 1


def test_merge_pool_dedups_across_generations():
    a = [{"prompt": "p", "completion": "c"}, {"prompt": "p", "completion": "d"}]
    b = [{"prompt": "p", "completion": "c "}, {"prompt": "q", "completion": "c"}]
    assert len(merge_pool([a, b])) == 3


def test_near_duplicates_within_a_seed_are_one_path():
    steps = "<think>10+20=30\n30+5=35\n35-7=28\n28+11=39\n39-2=37</think><answer>37</answer>"
    variant = steps.replace("<think>", "<think>ok ")  # same chain, a word added
    other = "<think>10+5=15\n15+20=35\n35-7=28\n28+11=39\n39-2=37</think><answer>37</answer>"
    q = "Q: 10+20+5-7+11-2\n"
    samples = [
        Sample("a", "s1", q, steps, "37", 4, 0, "m", 30, "stop"),
        Sample("b", "s1", q, variant, "37", 4, 1, "m", 31, "stop"),
        Sample("c", "s1", q, other, "37", 4, 2, "m", 30, "stop"),
        Sample("d", "s2", "Q: 9+21+5-7+11-2\n", variant, "37", 4, 0, "m", 31, "stop"),
    ]
    off = curate(samples, ["accuracy", "format"], "arith", max_per_seed=4)
    assert off.paths == {"s1": 3, "s2": 1} and off.counts["kept"] == 4
    on = curate(samples, ["accuracy", "format"], "arith", max_per_seed=4, near_dup=0.7)
    assert on.counts["dropped:near_duplicate"] == 1
    assert sorted(s.id for s in on.kept) == ["a", "c", "d"]
    assert on.paths == {"s1": 2, "s2": 1}
    assert set(on.diversity) == {"generated", "accepted"}
    assert on.diversity["accepted"]["mean_length"] > 0


def test_mix_replay_share_of_earlier_data():
    cur = [{"prompt": f"p{i}", "completion": "c"} for i in range(30)]
    old = [{"prompt": f"q{i}", "completion": "c"} for i in range(100)] + cur[:5]
    assert len(mix_replay(cur, old, None, 0)) == 130  # all, duplicates of current dropped
    mixed = mix_replay(cur, old, 0.25, 0)
    assert mixed[:30] == cur and len(mixed) == 40  # 10 earlier rows are 25 % of 40
    assert mixed == mix_replay(cur, old, 0.25, 0)  # seeded
    assert mix_replay(cur, old, 0.0, 0) == cur
    assert len(mix_replay(cur, old[:3], 0.5, 0)) == 33  # fewer earlier rows than the share asks
    assert len(mix_replay([], old, 0.5, 0)) == 105
