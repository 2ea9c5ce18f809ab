"""The answer scoring object and the short answer candidates, on small hand-made cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from langchain_core.documents import Document

from core.config import Config
from rag.extract import FEATURES, PROPERTIES, SpanModel, sentence_candidates, span_candidates
from rag.scoring import SPAN_WEIGHTS, AnswerScoring

PASSAGE = Document(
    page_content=(
        "مؤتمر موسكو\n"
        "انعقد مؤتمر موسكو للأمن الدولي في 15 أغسطس 2023، وحضره أكثر من 800 مندوب من 76 دولة. "
        "وألقى وزير الدفاع سيرجي شويجو كلمة الافتتاح."
    ),
    metadata={"title": "مؤتمر موسكو", "source": "a.txt", "start": 0, "end": 0},
)


def test_sentence_candidates_skip_the_heading_and_keep_offsets() -> None:
    sentences = sentence_candidates([PASSAGE], max_words=45)
    assert [s.text for s in sentences] == [
        "انعقد مؤتمر موسكو للأمن الدولي في 15 أغسطس 2023، وحضره أكثر من 800 مندوب من 76 دولة.",
        "وألقى وزير الدفاع سيرجي شويجو كلمة الافتتاح.",
    ]
    assert all(PASSAGE.page_content[s.start : s.end] == s.text for s in sentences)
    # Over the word budget, a sentence is cut at its comma into clauses.
    assert sentence_candidates([PASSAGE], max_words=10)[0].text == "انعقد مؤتمر موسكو للأمن الدولي في 15 أغسطس 2023،"


def spans_for(question: str) -> tuple[list[str], np.ndarray]:
    sentences = sentence_candidates([PASSAGE], max_words=45)
    sentence_features = np.zeros((len(sentences), 5), dtype=np.float32)
    candidates = span_candidates(
        question, [PASSAGE], sentences, [0, 1], sentence_features, np.array([1.0, 0.5]), lambda t: 1.0, 10
    )
    assert candidates.features.shape == (len(candidates), len(FEATURES))
    spans = [candidates.span(k) for k in range(len(candidates))]
    for span in spans:  # verbatim, at its offsets
        assert PASSAGE.page_content[span.start : span.end] == span.text
    assert [s.text for s in spans] == candidates.texts()
    return candidates.texts(), candidates.features


def test_span_candidates_hold_the_typed_answers_and_never_cross_punctuation() -> None:
    texts, _ = spans_for("كم دولة حضرت المؤتمر؟")
    assert {"76 دولة", "15 أغسطس 2023", "800 مندوب", "سيرجي شويجو", "وزير الدفاع سيرجي شويجو"} <= set(texts)
    assert not any("،" in t or "." in t for t in texts)
    assert not any(t.split()[0] in ("من", "في") for t in texts if len(t.split()) <= 10 and "انعقد" not in t)


def test_span_features_mark_type_overlap_and_distance() -> None:
    texts, features = spans_for("كم دولة حضرت المؤتمر؟")
    column = {name: i for i, name in enumerate(FEATURES)}
    number = features[texts.index("76 دولة")]
    assert number[column["how_many:digit"]] == 1.0
    assert number[column["when:digit"]] == 0.0  # only the question's own type is crossed
    date = features[texts.index("15 أغسطس 2023")]
    assert date[column["how_many:month"]] == 1.0 and date[column["how_many:year"]] == 1.0
    # "دولة" repeats the question; "سيرجي شويجو" does not.
    assert number[column["overlap_any"]] == 1.0
    assert features[texts.index("سيرجي شويجو")][column["overlap_any"]] == 0.0
    assert features[texts.index("سيرجي شويجو")][column["how_many:after_title"]] == 1.0
    assert features[texts.index("سيرجي شويجو")][column["sentence_rank_1"]] == 1.0


def test_a_number_followed_by_the_questions_noun_is_counted() -> None:
    texts, features = spans_for("قديش مندوب حضر المؤتمر؟")
    counted = FEATURES.index("how_many:counted")
    assert features[texts.index("800 مندوب")][counted] == 1.0
    assert features[texts.index("800")][counted] == 0.0  # the noun is outside the span
    assert features[texts.index("76 دولة")][counted] == 0.0  # not the noun asked about


def test_span_model_round_trips_and_scores_linearly(tmp_path: Path) -> None:
    weights = np.zeros(len(FEATURES), dtype=np.float32)
    weights[FEATURES.index(f"how_many:{PROPERTIES[0]}")] = 2.0  # digit
    model = SpanModel(FEATURES, np.zeros_like(weights), np.ones_like(weights), weights, {"note": "test"})
    model.save(tmp_path / "w.json")
    loaded = SpanModel.load(tmp_path / "w.json")
    texts, features = spans_for("كم دولة حضرت المؤتمر؟")
    assert np.allclose(loaded.score(features), model.score(features))
    scoring = AnswerScoring.from_config(Config(), span_weights=tmp_path / "w.json")
    assert scoring.span_model.info == {"note": "test"}
    assert any(c.isdigit() for c in texts[scoring.best_span(features)[0]])


def test_span_model_refuses_weights_for_other_features(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text('{"features": ["x"], "mean": [0], "scale": [1], "weights": [1]}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"eval\.train_span"):
        SpanModel.load(path)


def test_shipped_span_weights_load_and_prefer_the_number_for_how_many() -> None:
    scoring = AnswerScoring.from_config(Config())
    assert scoring.span_model.info.get("command") == "python -m eval.train_span"
    texts, features = spans_for("كم دولة شاركت في المؤتمر؟")
    assert "76" in texts[scoring.best_span(features)[0]]
    texts, features = spans_for("متى انعقد مؤتمر موسكو للأمن الدولي؟")
    assert "2023" in texts[scoring.best_span(features)[0]]
    assert SPAN_WEIGHTS.stat().st_size < 50_000


def test_sentence_scores_leave_passage_columns_out_of_own_evidence() -> None:
    scoring = AnswerScoring.from_config(Config(), sentence_weights=(0.5, 0.1, 0.2, 0.1, 0.2))
    features = np.array([[1.0, 0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0, 1.0]], dtype=np.float32)
    scores, own = scoring.sentence_scores(features)
    assert np.allclose(scores, [0.9, 0.4]) and np.allclose(own, [0.5, 0.0])
    assert scoring.ranked(scores) == [0, 1]


def test_confidence_adds_passage_similarity_and_thresholds_differ_by_language() -> None:
    scoring = AnswerScoring.from_config(
        Config(), passage_dense_floor=0.78, passage_dense_range=0.1, passage_confidence_weight=0.3
    )
    own = np.array([0.1, 0.3])
    assert scoring.confidence(own, own, 0.70) == pytest.approx(0.3)
    assert scoring.confidence(own, own, 0.83) == pytest.approx(0.3 + 0.15)
    assert scoring.confidence(np.zeros(0), np.zeros(0), 0.9) == 0.0
    assert scoring.threshold(cross_language=True) == scoring.cross_language_abstain_threshold
    assert scoring.threshold(cross_language=False) == scoring.abstain_threshold


def test_evidence_adds_a_second_sentence_only_when_close_and_in_budget() -> None:
    scoring = AnswerScoring.from_config(Config(), runner_up_ratio=0.8)
    scores = np.array([0.9, 0.8, 0.1])
    assert scoring.evidence(0, [10, 10, 10], scores, np.array([0.5, 0.45, 0.1]), 45) == [0, 1]
    assert scoring.evidence(0, [10, 10, 10], scores, np.array([0.5, 0.2, 0.1]), 45) == [0]
    assert scoring.evidence(0, [30, 30, 10], scores, np.array([0.5, 0.45, 0.1]), 45) == [0]
    # The short answer came from sentence 2: the best other one is sentence 0.
    assert scoring.evidence(2, [10, 10, 10], scores, np.array([0.5, 0.45, 0.5]), 45) == [2, 0]


@pytest.mark.parametrize(
    ("question", "typed"),
    [
        ("متى تأسس المؤتمر؟", 0),  # the sentence with a date
        ("ومتى تأسس؟", 0),  # a follow-up: the same question word behind the conjunction
        ("وكم دولة شاركت؟", 0),  # the sentence with numbers
        ("ومن ألقى الكلمة؟", None),  # "who" asks for neither a date nor a number
    ],
)
def test_answer_type_column_follows_the_question_word(question: str, typed: int | None) -> None:
    from rag.answer import ExtractiveAnswerer
    from tests.helpers import HashEmbedder

    answerer = ExtractiveAnswerer.from_config(Config(), HashEmbedder(), lambda t: 1.0, None)
    sentences = sentence_candidates([PASSAGE], max_words=45)
    type_match = answerer.features(question, [PASSAGE], sentences)[:, 3]
    assert list(type_match) == [float(i == typed) for i in range(len(sentences))]


def test_lexical_coverage_credits_another_form_of_the_questions_verb() -> None:
    from rag.answer import ExtractiveAnswerer
    from tests.helpers import HashEmbedder

    founded = Document(
        page_content="ويعقد المؤتمر كل سنة في موسكو. ومُنذ تأسيسه عام 2012 تغير الكثير في العالم.",
        metadata={"title": "t", "source": "b.txt", "start": 0, "end": 0},
    )
    sentences = sentence_candidates([founded], max_words=45)
    scoring = AnswerScoring.from_config(Config())
    answerer = ExtractiveAnswerer(
        embedder=HashEmbedder(), term_weight=lambda t: 1.0, scoring=scoring, max_words=45, reader=None
    )
    lexical = answerer.features("متى تأسس؟", [founded], sentences)[:, 0]
    assert lexical[1] == pytest.approx(scoring.soft_match_credit) and lexical[0] == 0.0
    scoring.soft_match_credit = 0.0
    assert answerer.features("متى تأسس؟", [founded], sentences)[1, 0] == 0.0


def test_train_span_varies_only_numeric_scoring_fields() -> None:
    import argparse

    from eval.train_span import scoring_change

    assert scoring_change("soft_match_credit=0") == ("soft_match_credit", 0.0)
    for bad in ("span_weights=x", "no_such_field=1", "soft_match_credit=high"):
        with pytest.raises(argparse.ArgumentTypeError):
            scoring_change(bad)
