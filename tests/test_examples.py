"""The product's own example questions (the UI's example buttons, the README's commands, and the
questions a new user asked of them) through the default pipeline: a bold short answer, when one is
shown, is right (issue 26, point 6).

A wrong bold answer shown with confidence is worse than the evidence sentence alone, so what this
holds the product to is that none of its own examples gets one; how many are answered in bold is
printed and bounded from below, and so is how many evidence sentences hold the answer.
"""

from __future__ import annotations

import re

import pytest

from eval.metrics import contains
from rag.chain import Pipeline
from ui.app import EXAMPLES

# Every example question with its gold answers, copied from the seeds (eval/questions/seeds.jsonl).
GOLD = {
    EXAMPLES[0]: ["15 أغسطس 2023"],
    EXAMPLES[1]: ["800 مندوب", "أكثر من 800"],
    EXAMPLES[2]: ["لي شانغفو"],
    EXAMPLES[3]: ["منظمة شانغهاي للتعاون", "شانغهاي"],
    EXAMPLES[4]: ["800 مندوب", "أكثر من 800"],
    EXAMPLES[5]: ["وزارة الدفاع الروسية"],
    # README's command-line and API examples, and questions a new user asked of the examples.
    "How many delegates attended the 2023 conference?": ["800 مندوب", "أكثر من 800"],
    "كم عدد الدول المشاركة في المؤتمر؟": ["76 دولة"],
    "من ترأس الوفد الايراني": ["عزيز نصير زاده"],
    "Who opened the conference?": ["بوتين"],
}
FOLLOW_UPS = [
    # (earlier question, follow-up, gold): README's follow-up examples.
    ("ما الرسالة التي أرادت إيران إيصالها بمشاركتها في مؤتمر موسكو؟", "ومن مثّلها؟", ["عزيز نصير زاده"]),
    ("متى عقد المؤتمر؟", "وكم مندوبا حضره؟", ["800 مندوب", "أكثر من 800"]),
]
# How many of these questions at least get a bold short answer, by mode (measured 2026-12-04 with
# the gate fitted for 0.80 held-out precision: the reader v2 shows 1 of 11, right, and withholds
# three right ones with the eight wrong ones; the span ranker's spans are right too rarely for any
# to pass). Fewer means the gate or the span choice got worse.
MIN_SHOWN = {False: 0, True: 1}
# Evidence that misses the answer, in both modes (measured 2026-12-06), two of eleven: «من هو وزير
# الدفاع الصيني…», whose evidence clause ends at the semicolon before "إذ حذر “لي شانغفو”" (showing
# the sentence whole through the semicolon lost two seed questions for none gained), and «كم عدد
# الدول المشاركة في المؤتمر؟», answered by a sentence about a welcome letter to the participants.
MAX_EVIDENCE_MISSED = 2


def _readme_examples() -> list[str]:
    """The questions of README's `rag ask` commands: every one must be among those checked here."""
    with open("README.md", encoding="utf-8") as readme:
        return re.findall(r'rag ask "([^"]+)"', readme.read())


def test_every_readme_question_is_checked() -> None:
    asked = set(GOLD) | {f for _, f, _ in FOLLOW_UPS} | {e for e, _, _ in FOLLOW_UPS}
    missing = [q for q in _readme_examples() if q not in asked and q.replace("ُ", "") not in asked]
    assert not missing, missing


@pytest.mark.parametrize("reader", [False, True], ids=["default", "reader"])
def test_no_example_gets_a_wrong_bold_answer(seeds_pipeline: Pipeline, reader: bool) -> None:
    if reader:
        pytest.importorskip("torch")
        from rag.chain import reader_available

        if not reader_available():
            pytest.skip("the reader's C library is not built (make)")
    shown, wrong, missed, lines = 0, [], [], []
    repeated: list[tuple[str, str]] = []
    cases: list[tuple[str, list[tuple[str, str]], list[str]]] = [(q, [], g) for q, g in GOLD.items()]
    cases += [(f, [(e, "")], g) for e, f, g in FOLLOW_UPS]
    for question, history, gold in cases:
        if history:
            earlier = seeds_pipeline.ask(history[0][0], reader=reader)
            history = [(history[0][0], earlier.answer)]
        answer = seeds_pipeline.ask(question, history=history, reader=reader)
        check = answer.short_answer_check
        lines.append(f"{question} -> {answer.short_answer or '(withheld: ' + check.get('candidate', '') + ')'}")
        if not contains(answer.answer, gold):
            missed.append(question)
        # Two overlapping passages hold the same sentence: it is evidence once, not [1] and [2].
        said = [part.strip() for part in re.split(r"\[\d+\]", answer.answer.split(" — ")[-1]) if part.strip()]
        repeated.extend((question, part) for part in set(said) if said.count(part) > 1)
        if answer.short_answer:
            shown += 1
            if not contains(answer.short_answer, gold):
                wrong.append((question, answer.short_answer, check.get("probability")))
    print("\n" + "\n".join(lines) + f"\n{shown} of {len(cases)} with a bold short answer")
    assert not wrong, wrong
    assert not repeated, repeated
    assert len(missed) <= MAX_EVIDENCE_MISSED, missed
    assert shown >= MIN_SHOWN[reader]
