"""Data hygiene for self-generated data: decontamination, deduplication, diversity. Pure.

- **Decontamination** checks seeds against the eval suite two ways: normalised exact match
  (NFKC, case-folded, whitespace and trailing punctuation dropped) and token n-gram
  containment (the share of an eval item's n-grams found in the seed). Departure from the
  usual 13-gram rule: eval items here are short expressions, so n shrinks to the item's own
  length, and items shorter than `min_tokens` are matched exactly only; containment of a tiny
  item would flag every longer problem that happens to start with it.
- **Dedup**: exact by a hash of the normalised text, near-duplicate by MinHash LSH over
  character shingles (`datasketch`); the first occurrence of a cluster wins.
- **Diversity** of a set of completions: distinct-1/2, self-similarity (mean MinHash Jaccard of
  pairs), answer-distribution entropy, mean length. A collapse alarm fires when a metric drops
  by more than a configured share against a reference set.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from datasketch import MinHash, MinHashLSH

from tasks.rewards import extract_answer

TOKEN_RE = re.compile(r"\d+|[^\W\d_]+|[^\w\s]")


def normalise(text: str) -> str:
    """The text as exact matching sees it: NFKC, case-folded, no whitespace, no end punctuation."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"\s+", "", text).rstrip("?.!;:")


def exact_key(text: str) -> str:
    return hashlib.sha256(normalise(text).encode()).hexdigest()[:20]


def tokens(text: str) -> list[str]:
    return TOKEN_RE.findall(unicodedata.normalize("NFKC", text).casefold())


def ngrams(toks: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


# -- decontamination -----------------------------------------------------------------------------
@dataclass
class Decontaminated:
    kept: list  # the items that passed, in input order
    dropped: dict[str, list[str]] = field(default_factory=dict)  # method -> dropped texts

    @property
    def counts(self) -> dict[str, int]:
        return {m: len(v) for m, v in self.dropped.items()}


class SuiteIndex:
    """The eval suite, indexed once for exact and n-gram lookups."""

    def __init__(self, questions: Sequence[str], n: int = 8, min_tokens: int = 5):
        self.n, self.min_tokens = n, min_tokens
        self.exact = {exact_key(q) for q in questions}
        self.items: list[set[tuple[str, ...]]] = []
        self.by_gram: dict[tuple[str, ...], list[int]] = {}
        for q in questions:
            toks = tokens(q)
            if len(toks) < min_tokens:
                continue
            grams = ngrams(toks, min(n, len(toks)))
            for g in grams:
                self.by_gram.setdefault(g, []).append(len(self.items))
            self.items.append(grams)
        self.sizes = sorted({len(next(iter(g))) for g in self.items})

    def ngram_overlap(self, text: str) -> float:
        """Highest share of one eval item's n-grams contained in `text`."""
        toks = tokens(text)
        hits: Counter[int] = Counter()
        for size in self.sizes:
            for g in ngrams(toks, size):
                for item in self.by_gram.get(g, ()):
                    hits[item] += 1
        return max((c / len(self.items[i]) for i, c in hits.items()), default=0.0)

    def hit(self, text: str, threshold: float) -> str | None:
        """`exact`, `ngram`, or None: the first method that flags `text`."""
        if exact_key(text) in self.exact:
            return "exact"
        if self.items and self.ngram_overlap(text) >= threshold:
            return "ngram"
        return None


def decontaminate(items: list, text_of, index: SuiteIndex, threshold: float) -> Decontaminated:
    """Drop every item whose text hits the suite; count the drops per method."""
    out = Decontaminated([], {"exact": [], "ngram": []})
    for item in items:
        method = index.hit(text_of(item), threshold)
        if method is None:
            out.kept.append(item)
        else:
            out.dropped[method].append(text_of(item))
    return out


# -- dedup ---------------------------------------------------------------------------------------
def shingles(text: str, k: int) -> set[bytes]:
    t = normalise(text)
    if len(t) <= k:
        return {t.encode()}
    return {t[i : i + k].encode() for i in range(len(t) - k + 1)}


def minhashes(texts: Sequence[str], k: int, num_perm: int) -> list[MinHash]:
    # `bulk` draws the permutations once for all texts (the same values a fresh MinHash per
    # text would draw from the same seed); drawing them per text was a quarter of curation.
    return MinHash.bulk((list(shingles(t, k)) for t in texts), num_perm=num_perm, seed=1)


@dataclass
class Deduped:
    keep: list[int]  # indices kept, in input order
    exact: int = 0  # dropped as exact duplicates
    near: int = 0  # dropped as near-duplicates
    cluster: list[int] = field(default_factory=list)  # per input index: its kept representative


def dedup(
    texts: Sequence[str],
    *,
    near_threshold: float | None = 0.9,
    shingle: int = 5,
    num_perm: int = 128,
    prior: Sequence[str] = (),
    groups: Sequence[str] | None = None,
) -> Deduped:
    """Indices of `texts` to keep: exact duplicates (normalised) go first, then near-duplicates
    (estimated Jaccard >= near_threshold; None turns this off). Texts that duplicate one of
    `prior` (earlier data) are dropped too. With `groups` (one label per text) a near-duplicate
    counts only inside its group: two completions of one seed that differ by a few characters
    are one reasoning path; two completions of different seeds never are."""
    seen: dict[str, int] = {exact_key(t): -1 for t in prior}
    out = Deduped([], cluster=[-1] * len(texts))
    candidates = []
    for i, t in enumerate(texts):
        key = exact_key(t)
        if key in seen:
            out.exact += 1
            out.cluster[i] = seen[key]
        else:
            seen[key] = i
            candidates.append(i)
    if near_threshold is None:
        out.keep = candidates
        for i in candidates:
            out.cluster[i] = i
        return out
    lsh = MinHashLSH(threshold=near_threshold, num_perm=num_perm)
    for j, m in enumerate(minhashes(list(prior), shingle, num_perm)):
        lsh.insert(f"p{j}", m)
    hashes = minhashes([texts[i] for i in candidates], shingle, num_perm)
    for i, m in zip(candidates, hashes, strict=True):
        near = lsh.query(m)
        if groups is not None:
            near = [k for k in near if not k.startswith("p") and groups[int(k)] == groups[i]]
        if near:
            out.near += 1
            first = min(near, key=lambda k: (k.startswith("p"), int(k.lstrip("p"))))
            out.cluster[i] = -1 if first.startswith("p") else int(first)
            continue
        lsh.insert(str(i), m)
        out.keep.append(i)
        out.cluster[i] = i
    for i, c in enumerate(out.cluster):  # exact duplicates point at the kept representative
        if c >= 0:
            out.cluster[i] = out.cluster[c]
    return out


# -- diversity -----------------------------------------------------------------------------------
DIVERSITY_METRICS = ("distinct_1", "distinct_2", "self_similarity", "answer_entropy", "mean_length")
# For these a rise, not a drop, is the bad direction.
HIGHER_IS_WORSE = frozenset({"self_similarity"})


def final_answer(completion: str) -> str:
    """The answer `tasks.rewards.extract_answer` reads, or "" (a completion without one)."""
    return extract_answer(completion) or ""


def diversity(
    completions: Sequence[str], *, pairs: int = 512, shingle: int = 5, seed: int = 0
) -> dict[str, float]:
    """Diversity of a set of completions; every figure lies in a fixed range for any set size
    but `mean_length` (tokens) and `answer_entropy` (bits)."""
    if not completions:
        return dict.fromkeys(DIVERSITY_METRICS, 0.0)
    # Counted one completion at a time: only the distinct tokens and bigrams are held, never
    # every token of the set (at 100k samples that was most of curation's peak memory).
    uni_seen: set[str] = set()
    bi_seen: set[tuple[str, str]] = set()
    n_uni = n_bi = 0
    for c in completions:
        ts = tokens(c)
        uni_seen.update(ts)
        bi_seen.update(zip(ts, ts[1:], strict=False))
        n_uni += len(ts)
        n_bi += max(len(ts) - 1, 0)
    answers = Counter(final_answer(c) for c in completions)
    total = sum(answers.values())
    entropy = -sum(c / total * math.log2(c / total) for c in answers.values())
    rng = random.Random(seed)
    n = len(completions)
    sims = []
    if n > 1:
        idx = sorted({i for _ in range(pairs) for i in rng.sample(range(n), 2)})
        mh = dict(zip(idx, minhashes([completions[i] for i in idx], shingle, 64), strict=True))
        rng = random.Random(seed)
        for _ in range(pairs):
            a, b = rng.sample(range(n), 2)
            sims.append(mh[a].jaccard(mh[b]))
    return {
        "distinct_1": len(uni_seen) / max(n_uni, 1),
        "distinct_2": len(bi_seen) / max(n_bi, 1),
        "self_similarity": sum(sims) / len(sims) if sims else 1.0,
        "answer_entropy": entropy,
        "mean_length": n_uni / n,
    }


def collapse_checks(
    reference: dict[str, float], current: dict[str, float], max_drop: dict[str, float]
) -> dict[str, dict]:
    """One guard record per watched metric: how far it moved the bad way (relative to
    `reference`), its limit, whether it is ok, and a reason."""
    out = {}
    for name, limit in max_drop.items():
        ref, cur = reference.get(name), current.get(name)
        if ref is None or cur is None or ref <= 0:
            continue
        change = (cur - ref) / ref if name in HIGHER_IS_WORSE else (ref - cur) / ref
        way = "rose" if name in HIGHER_IS_WORSE else "fell"
        out[name] = {
            "champion": ref,
            "challenger": cur,
            "regression": change,
            "limit": limit,
            "ok": change <= limit,
            "reason": f"{name} {way} {change:.1%} ({ref:.4f} -> {cur:.4f}), limit {limit:.0%}",
        }
    return out
