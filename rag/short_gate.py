"""Whether to show a short answer in bold: a calibrated probability that it is right.

A new user read the bold short answer first and found it wrong about half the time while the
evidence sentence under it was right (issue 26). A wrong answer shown with confidence is worse
than the passage alone, so each short answer gets a probability that it matches the answer a
person would give (token F1 ≥ 0.5), from a logistic model over what the answerer knows when it
picks the span: how sure the span model was, how sure the evidence is, whether the span has the
kind of token the question asks for ("كم"/"how many" a number, "متى"/"when" a date), whether it
merely repeats the question's own words, and its length. Below `threshold` the answer is shown
as its evidence sentence without a bold span, and the JSON says why.

The weights are fitted held out by `python -m eval.calibrate` on the Arabic question sets in
../shared/data and stored as JSON (`rag/short_gate.json`, never a pickle) with the measurement
that chose the threshold.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from index.arabic import terms
from rag.wording import question_type

GATE_WEIGHTS = Path(__file__).resolve().with_name("short_gate.json")
FEATURES = (
    "reader",
    "whole_sentence",
    "probability",
    "reader_probability",
    "confidence",
    "type_mismatch",
    "echo",
    "log_words",
    "cross_language",
    "top_sentence",
    "reader_margin",
)
_DIGIT_RE = re.compile(r"[0-9٠-٩]")
# Counts written as words: Arabic stems (the masculine and feminine forms share them) and English.
_NUMBER_WORD_RE = re.compile(
    r"(واحد|اثن|ثلاث|أربع|اربع|خمس|ست|سبع|ثمان|تسع|عشر|مئ|مائ|ألف|الف|آلاف|مليون|ملايين|مليار|"
    r"\b(one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|forty|fifty|"
    r"hundred|thousand|million|billion|dozen)s?\b)",
    re.IGNORECASE,
)
_DATE_WORD_RE = re.compile(
    r"(يناير|فبراير|مارس|أبريل|ابريل|مايو|يونيو|يوليو|أغسطس|اغسطس|سبتمبر|أكتوبر|اكتوبر|نوفمبر|ديسمبر|"
    r"كانون|شباط|آذار|نيسان|أيار|حزيران|تموز|آب|أيلول|تشرين|محرم|صفر|ربيع|جمادى|رجب|شعبان|رمضان|شوال|"
    r"ذو القعدة|ذو الحجة|القرن|عام|سنة|العصر|الحرب|"
    r"\b(january|february|march|april|may|june|july|august|september|october|november|december|"
    r"century|year|war|age|era|dynasty)\b)",
    re.IGNORECASE,
)


def type_mismatch(question: str, span: str) -> bool:
    """The question asks for a count or a date and the span holds none (no digit, no number or
    date word): "كم عدد الدول المشاركة؟" answered «رسالة ترحيب للمشاركين»."""
    kind = question_type(question)
    if kind == "how_many":
        return not (_DIGIT_RE.search(span) or _NUMBER_WORD_RE.search(span))
    if kind == "when":
        return not (_DIGIT_RE.search(span) or _DATE_WORD_RE.search(span))
    return False


def echo(question: str, span: str) -> float:
    """Share of the span's words that are the question's own: a span that repeats the question
    ("رفيع من الجيش الإيراني" for "من ترأس الوفد الإيراني؟") rarely answers it."""
    span_terms = terms(span)
    if not span_terms:
        return 1.0
    asked = set(terms(question))
    return sum(t in asked for t in span_terms) / len(span_terms)


def gate_features(
    question: str,
    span: str,
    by: str,
    probability: float,
    confidence: float,
    cross_language: bool,
    sentence_rank: int = 0,
    margin: float = 0.0,
) -> dict[str, float]:
    """The model's inputs for one short answer (`by`: "reader", "span_ranker" or "sentence";
    `probability`: the span model's own probability of the span among its candidates;
    `sentence_rank`: where the sentence holding it stands in the evidence ranking, 0 the best:
    a span the reader and the sentence ranker agree on is more often right; `margin`: the
    reader's log-odds of the span against "no answer here", clipped to ±10)."""
    reader = float(by == "reader")
    return {
        "reader": reader,
        "whole_sentence": float(by == "sentence"),
        "probability": float(probability),
        "reader_probability": reader * float(probability),
        "confidence": float(confidence),
        "type_mismatch": float(type_mismatch(question, span)),
        "echo": echo(question, span),
        "log_words": math.log1p(len(span.split())),
        "cross_language": float(cross_language),
        "top_sentence": float(sentence_rank == 0),
        "reader_margin": reader * max(-10.0, min(10.0, float(margin))),
    }


@dataclass(frozen=True)
class ShortAnswerGate:
    """A logistic model over `FEATURES` (standardised), and the probability under which a short
    answer is withheld."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float
    info: dict[str, Any] = field(default_factory=dict)

    def probability(self, features: dict[str, float]) -> float:
        x = np.array([features[name] for name in FEATURES], dtype=np.float64)
        z = float(((x - self.mean) / self.scale) @ self.weights + self.bias)
        return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))

    def check(self, features: dict[str, float]) -> dict[str, Any]:
        """What the answer's JSON says: the probability, the threshold, and why it is withheld
        ("" when shown; "wrong_type" when the type check failed too, else "low_probability")."""
        p = self.probability(features)
        reason = ""
        if p < self.threshold:
            reason = "wrong_type" if features["type_mismatch"] else "low_probability"
        return {"probability": round(p, 4), "threshold": self.threshold, "withheld": reason, "features": features}

    def to_json(self) -> dict[str, Any]:
        return {
            "features": list(FEATURES),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "weights": self.weights.tolist(),
            "bias": self.bias,
            "threshold": self.threshold,
            "info": self.info,
        }

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path = GATE_WEIGHTS) -> ShortAnswerGate:
        data = json.loads(path.read_text(encoding="utf-8"))
        if tuple(data["features"]) != FEATURES:
            raise ValueError(f"{path} was fitted on other features; rerun python -m eval.calibrate --write")
        return cls(
            np.array(data["mean"], dtype=np.float64),
            np.array(data["scale"], dtype=np.float64),
            np.array(data["weights"], dtype=np.float64),
            float(data["bias"]),
            float(data["threshold"]),
            dict(data.get("info", {})),
        )

    @classmethod
    def open(cls) -> ShortAnswerGate:
        """Every short answer shown (threshold 0): what calibration runs with, to see them all."""
        n = len(FEATURES)
        return cls(np.zeros(n), np.ones(n), np.zeros(n), 0.0, 0.0, {"open": True})


def fit(
    x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Logistic regression by Newton's method on standardised features (L2 on the weights, not the
    bias): (mean, scale, weights, bias)."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = np.column_stack([(x - mean) / scale, np.ones(len(x))])
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -30, 30)))
        gradient = z.T @ (p - y) + penalty * w
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return mean, scale, w[:-1], float(w[-1])
