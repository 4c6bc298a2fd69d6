"""Decontamination, dedup and diversity: the pure hygiene functions."""

import random

from tasks.domains import DOMAINS, eval_suite, make_seeds
from tasks.hygiene import (
    SuiteIndex,
    collapse_checks,
    decontaminate,
    dedup,
    diversity,
    exact_key,
    normalise,
)

ARITH = DOMAINS["arith"]
FULLWIDTH = str.maketrans("0123456789+-", "０１２３４５６７８９＋－")


def spaced(q: str) -> str:
    return " ".join(q.replace("+", " + ").replace("-", " - ").split())


EXACT_COPIES = {  # same text once normalised
    "verbatim": lambda q: q,
    "spaces": spaced,
    "question mark": lambda q: q + " ?",
    "full-width": lambda q: q.translate(FULLWIDTH),
}
PARAPHRASES = {  # the same problem reworded
    "what is": lambda q: f"What is {q}?",
    "evaluate spaced": lambda q: f"Evaluate {spaced(q)}, showing each step.",
    "please compute": lambda q: f"Please compute the value of the expression {q} for me.",
    "reordered": lambda q: _reorder(q),
}


def _reorder(q: str) -> str:
    """Move the last `+n` term to the front: the same value, a different string."""
    head, sep, last = q.rpartition("+")
    return f"{last}+{head}" if sep else f"-{q.rpartition('-')[2]}+{q.rpartition('-')[0]}"


def test_normalise_and_exact_key():
    assert normalise(" 1 + 2 ?") == "1+2" == normalise("１＋２.")
    assert exact_key("What is 1+2") == exact_key("what is 1 + 2?")
    assert exact_key("1+2") != exact_key("1+3")


def planted(seed: int = 0):
    suite = eval_suite(ARITH, 512)
    rng = random.Random(seed)
    clean = make_seeds(ARITH, 400, [1, 2, 3, 4, 5], rng, {s.question for s in suite})
    picked = rng.sample(suite, 96)
    return suite, clean, picked


def test_planted_eval_items_are_caught(capsys):
    suite, clean, picked = planted()
    index = SuiteIndex([s.question for s in suite], n=8, min_tokens=5)
    figures, collateral = {}, 0
    for kind, table in (("exact", EXACT_COPIES), ("paraphrase", PARAPHRASES)):
        for name, fn in table.items():
            planted_q = [fn(s.question) for s in picked]
            seeds = [c.question for c in clean] + planted_q
            rng = random.Random(1)
            rng.shuffle(seeds)
            out = decontaminate(seeds, str, index, threshold=0.5)
            caught = set(out.dropped["exact"]) | set(out.dropped["ngram"])
            collateral = max(collateral, len(caught & {c.question for c in clean}))
            # level >= 2: three operands or more, at least the 5 tokens the n-gram check needs
            long_ = [fn(s.question) for s in picked if s.difficulty >= 2]
            figures[(kind, name)] = {
                "exact": sum(q in out.dropped["exact"] for q in planted_q) / len(planted_q),
                "ngram": sum(q in out.dropped["ngram"] for q in planted_q) / len(planted_q),
                "any": sum(q in caught for q in planted_q) / len(planted_q),
                "any (>= 5 tokens)": sum(q in caught for q in long_) / len(long_),
            }
    with capsys.disabled():
        print("\nshare of 96 planted eval items caught among 400 clean seeds (first method wins)")
        print(f"  clean seeds dropped: {collateral} of {len(clean)}")
        for (kind, name), f in figures.items():
            print(f"  {kind:10s} {name:16s} " + "  ".join(f"{k} {v:.2f}" for k, v in f.items()))
    for name in EXACT_COPIES:
        assert figures[("exact", name)]["exact"] == 1.0
    for name in ("what is", "evaluate spaced", "please compute"):
        # Every paraphrase of an item long enough for the n-gram check is caught.
        assert figures[("paraphrase", name)]["any (>= 5 tokens)"] == 1.0
        assert figures[("paraphrase", name)]["exact"] == 0.0
    # Reordering operands defeats both string methods; the figure says so instead of hiding it.
    assert figures[("paraphrase", "reordered")]["any"] < 0.5
    # A clean seed is dropped only when it contains an eval problem as a sub-expression.
    assert collateral <= len(clean) // 100


def test_short_items_are_matched_exactly_only():
    index = SuiteIndex(["3+4", "10-2+7-5+6"], n=8, min_tokens=8)
    assert index.hit("3 + 4", 0.5) == "exact"
    assert index.hit("3+4-9", 0.5) is None  # a longer problem that starts with a short item
    assert index.hit("Find 10 - 2 + 7 - 5 + 6 now", 0.5) == "ngram"
    assert index.hit("10-2+7-5+9", 0.5) == "ngram"  # one n-gram of the two survives: 0.5
    assert index.hit("10-2+7-5+9", 0.6) is None
    assert index.ngram_overlap("nothing here") == 0.0


def test_exact_dedup_keeps_first_and_maps_clusters():
    texts = ["1+2", "1 + 2", "3+4", "1+2?", "5+6"]
    d = dedup(texts, near_threshold=None)
    assert d.keep == [0, 2, 4] and d.exact == 2 and d.near == 0
    assert d.cluster == [0, 0, 2, 0, 4]


def test_near_dedup_drops_small_edits_not_different_problems():
    base = "<think>13-4=9\n9+17=26\n26-3=23\n23+40=63</think><answer>63</answer>"
    texts = [
        base,
        base.replace("<answer>63</answer>", "<answer>63 </answer>"),  # exact after normalising
        base + " ok",  # near
        "<think>12-5=7\n7+30=37\n37-3=34\n34+41=75</think><answer>75</answer>",  # different
    ]
    d = dedup(texts, near_threshold=0.8, shingle=5, num_perm=128)
    assert d.keep == [0, 3] and d.exact == 1 and d.near == 1
    assert d.cluster == [0, 0, 0, 3]
    # Earlier data counts: a text already in `prior` is dropped.
    d2 = dedup(["x" * 40, texts[3]], near_threshold=0.8, prior=[texts[3]])
    assert d2.keep == [0] and d2.exact == 1


def test_diversity_metrics_fall_when_outputs_collapse():
    rng = random.Random(0)
    varied = []
    for _ in range(200):
        a, b = rng.randrange(100), rng.randrange(100)
        varied.append(f"<think>{a}+{b}={a + b}</think><answer>{a + b}</answer>")
    collapsed = ["<think>1+1=2</think><answer>2</answer>"] * 180 + varied[:20]
    hi, lo = diversity(varied), diversity(collapsed)
    for name in ("distinct_1", "distinct_2", "answer_entropy"):
        assert hi[name] > lo[name], name
    assert lo["self_similarity"] > hi["self_similarity"]
    assert 0 <= lo["distinct_2"] <= 1 and hi["mean_length"] == lo["mean_length"] > 0
    assert diversity([])["mean_length"] == 0.0
    checks = collapse_checks(hi, lo, {"distinct_2": 0.3, "self_similarity": 0.5})
    assert {k for k, c in checks.items() if not c["ok"]} == {"distinct_2", "self_similarity"}
    assert "fell" in checks["distinct_2"]["reason"]
    assert "rose" in checks["self_similarity"]["reason"]
    steady = collapse_checks(hi, hi, {"distinct_2": 0.01, "answer_entropy": 0.01})
    assert set(steady) == {"distinct_2", "answer_entropy"} and all(c["ok"] for c in steady.values())
