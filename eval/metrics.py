"""Scoring functions, all on Arabic-normalised text so spelling variants are not counted as errors."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from index.arabic import normalize

_MARKER_RE = re.compile(r"\[\d+\]")
_ARTICLES = frozenset({"a", "an", "the"})


def answer_key(text: str) -> str:
    """SQuAD-style answer normalisation plus Arabic folding; citation markers are dropped."""
    words = normalize(_MARKER_RE.sub(" ", text)).split()
    words = [w[2:] if w.startswith("ال") and len(w) > 3 else w for w in words if w not in _ARTICLES]
    return " ".join(words)


def contains(text: str, gold: Sequence[str]) -> bool:
    """Does the text contain any gold answer (whole-word, normalised)?"""
    haystack = f" {answer_key(text)} "
    return any(key and f" {key} " in haystack for key in (answer_key(g) for g in gold))


def exact_match(prediction: str, gold: Sequence[str]) -> float:
    key = answer_key(prediction)
    return float(any(key == answer_key(g) for g in gold))


def token_f1(prediction: str, gold: Sequence[str]) -> float:
    """Best token-overlap F1 against any gold answer (SQuAD definition)."""
    pred = answer_key(prediction).split()
    best = 0.0
    for g in gold:
        ref = answer_key(g).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if not pred or not ref or not common:
            continue
        precision, recall = common / len(pred), common / len(ref)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def first_hit(hits: Sequence[bool]) -> int | None:
    """1-based rank of the first relevant result, or None."""
    return next((i + 1 for i, hit in enumerate(hits) if hit), None)


def recall_at(rank: int | None, k: int) -> float:
    return float(rank is not None and rank <= k)


def reciprocal_rank(rank: int | None, cutoff: int = 10) -> float:
    return 1.0 / rank if rank is not None and rank <= cutoff else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered) / 100) - 1))
    return ordered[index]


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
