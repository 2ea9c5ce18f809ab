"""The short-answer gate (rag/short_gate.py): a bold short answer only when it is likely right.

The cases are the wrong bold answers a new user met on the product's own examples (issue 26).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rag.answer import AnswerRequest, ExtractiveAnswerer
from rag.chain import Pipeline
from rag.short_gate import FEATURES, GATE_WEIGHTS, ShortAnswerGate, echo, fit, gate_features, type_mismatch


@pytest.mark.parametrize(
    ("question", "span", "mismatch"),
    [
        ("كم عدد الدول المشاركة في المؤتمر؟", "رسالة ترحيب للمشاركين في المؤتمر", True),
        ("كم عدد الدول المشاركة في المؤتمر؟", "76 دولة", False),
        ("كم عدد المندوبين؟", "أكثر من ثمانمائة مندوب", False),
        ("How many delegates attended?", "أكثر من 800 مندوب", False),
        ("How many delegates attended?", "مندوبون من دول كثيرة", True),
        ("متى ولد بوتين؟", "الأقطاب", True),
        ("متى عقد المؤتمر؟", "15 أغسطس 2023", False),
        ("متى تأسست الدولة؟", "في القرن التاسع عشر", False),
        ("When was it founded?", "in the nineteenth century", False),
        ("من ترأس الوفد الإيراني؟", "رفيع من الجيش الإيراني", False),  # not a type question: echo decides
    ],
)
def test_type_mismatch(question: str, span: str, mismatch: bool) -> None:
    assert type_mismatch(question, span) is mismatch


def test_echo_counts_the_questions_own_words() -> None:
    assert echo("من ترأس الوفد الإيراني؟", "الوفد الإيراني") == 1.0
    assert echo("من ترأس الوفد الإيراني؟", "محمد باقري") == 0.0
    assert 0 < echo("من ترأس الوفد الإيراني؟", "رئيس الوفد محمد باقري") < 1
    assert echo("سؤال", "") == 1.0  # nothing of its own: no answer at all


def test_fit_learns_which_feature_tells_right_from_wrong() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(FEATURES)))
    informative = FEATURES.index("probability")
    y = (x[:, informative] + 0.3 * rng.normal(size=400) > 0).astype(float)
    mean, scale, weights, bias = fit(x, y)
    assert weights[informative] > 1.0
    assert np.abs(np.delete(weights, informative)).max() < 0.5 * weights[informative]
    gate = ShortAnswerGate(mean, scale, weights, bias, 0.5)
    high = dict(zip(FEATURES, [0.0] * len(FEATURES))) | {"probability": 2.0}
    low = high | {"probability": -2.0}
    assert gate.probability(high) > 0.9 > 0.1 > gate.probability(low)
    assert gate.check(high)["withheld"] == "" and gate.check(low)["withheld"] == "low_probability"
    assert gate.check(low | {"type_mismatch": 1.0})["withheld"] == "wrong_type"


def test_saved_gate_round_trips_and_refuses_other_features(tmp_path: Path) -> None:
    gate = ShortAnswerGate(np.zeros(len(FEATURES)), np.ones(len(FEATURES)), np.arange(len(FEATURES)) / 10, 0.2, 0.6)
    path = tmp_path / "gate.json"
    gate.save(path)
    again = ShortAnswerGate.load(path)
    features = gate_features("كم عدد الدول؟", "76 دولة", "reader", 0.8, 0.5, False)
    assert again.probability(features) == pytest.approx(gate.probability(features))
    data = json.loads(path.read_text(encoding="utf-8"))
    data["features"] = data["features"][:-1]
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError, match=r"eval\.calibrate"):
        ShortAnswerGate.load(path)


def test_the_shipped_gate_loads_and_says_how_it_was_measured() -> None:
    gate = ShortAnswerGate.load(GATE_WEIGHTS)
    assert 0.0 < gate.threshold < 1.0
    assert "eval.calibrate" in gate.info["command"] and gate.info["held_out"]["all"]["short_precision"] > 0


def _answerer(pipeline: Pipeline, threshold: float) -> ExtractiveAnswerer:
    answerer = pipeline.answerer.model_copy(deep=False)
    answerer.scoring = replace(answerer.scoring)
    answerer.scoring.short_gate = replace(ShortAnswerGate.open(), threshold=threshold)
    return answerer


def test_a_withheld_short_answer_leaves_the_evidence_alone(seeds_pipeline: Pipeline) -> None:
    question = "متى عقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة؟"
    passages = seeds_pipeline.retriever.invoke(question, k=5)
    shown = _answerer(seeds_pipeline, 0.0).invoke(AnswerRequest(question, passages))
    withheld = _answerer(seeds_pipeline, 1.0).invoke(AnswerRequest(question, passages))
    assert shown.short_answer and shown.short_answer_check["withheld"] == ""
    assert withheld.short_answer == "" and withheld.short_answer_by == "" and not withheld.short_answer_citation
    assert withheld.short_answer_check["withheld"] == "low_probability"
    assert withheld.short_answer_check["candidate"] == shown.short_answer  # the JSON still says what it was
    assert not withheld.abstained and " — " not in withheld.answer
    evidence = shown.answer.split(" — ", 1)[1].split(" [")[0]
    assert withheld.answer.startswith(evidence)  # the same evidence, without the bold span before it
    assert set(withheld.short_answer_check["features"]) == set(FEATURES)
