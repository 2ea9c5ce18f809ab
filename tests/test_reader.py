"""rag.reader: the fine-tuned reader's head on a tiny case, span decoding, and its weights file."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from langchain_core.documents import Document

from core.config import PROJECT_ROOT, Config
from rag.answer import AnswerRequest, ExtractiveAnswerer
from rag.extract import ReadSpan, SpanReader
from rag.reader import READER_WEIGHTS, AnswerReader
from rag.readernet import (
    MAX_ANSWER_TOKENS,
    BaseModel,
    Linear,
    ReaderNet,
    ReaderWeightsError,
    Reading,
    Window,
    length_batches,
    load_base,
    load_reader,
    pad_states,
    read,
    windows,
)
from rag.scoring import AnswerScoring
from rag.tokens import default_model, token_encoder
from tests.helpers import HashEmbedder

FIRST = 11  # one top layer: enough for these cases, and quick


@pytest.fixture(scope="module")
def base() -> BaseModel:
    return load_base(default_model(), FIRST)


def _tiny_case(seed: int = 0) -> tuple[np.ndarray, int, int]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((24, 384)).astype(np.float32), 9, 12


@pytest.mark.parametrize("mode", ["full", "lora", "bitfit"])
def test_each_mode_learns_to_mark_a_span(base: BaseModel, mode: str) -> None:
    torch.manual_seed(0)
    net = ReaderNet(base, FIRST, mode, rank=4)
    states, first, last = _tiny_case()
    x, mask = torch.from_numpy(states)[None], torch.ones(1, len(states), dtype=torch.bool)
    optimiser = torch.optim.AdamW(list(net.trained().values()), lr=1e-2)
    for _ in range(40):
        start, end = net(x, mask)
        loss = torch.nn.functional.cross_entropy(start, torch.tensor([first])) + torch.nn.functional.cross_entropy(
            end, torch.tensor([last])
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    start, end = net(x, mask)
    assert (int(start.argmax()), int(end.argmax())) == (first, last)


def test_only_the_modes_parameters_train(base: BaseModel) -> None:
    sizes = {
        mode: sum(p.numel() for p in ReaderNet(base, FIRST, mode, 8).trained().values())
        for mode in ("full", "lora", "bitfit")
    }
    assert sizes["bitfit"] < sizes["lora"] < sizes["full"]
    assert all(name.startswith("head.") or "lora_" in name for name in ReaderNet(base, FIRST, "lora", 8).trained())


def test_windows_cover_a_long_passage_and_keep_offsets() -> None:
    question = np.arange(100, 105, dtype=np.int32)
    n = 50
    passage = (
        np.concatenate([[7, 8], np.arange(1000, 1000 + n)]).astype(np.int32),
        np.concatenate([[-1, -1], np.arange(n) * 3]).astype(np.int32),
        np.concatenate([[-1, -1], np.arange(n) * 3 + 2]).astype(np.int32),
    )
    got = windows(question, passage, eos=2, length=30, stride=4)
    assert len(got) > 1
    covered = set()
    for w in got:
        assert len(w.ids) + 2 <= 30
        assert list(w.ids[:7]) == [100, 101, 102, 103, 104, 2, 2]
        # Row offset + j of the states is the window's j-th passage token (<s> is row 0).
        assert w.ids[w.offset - 1 + 0] == 1000 + w.starts[0] // 3
        covered |= set(w.starts.tolist())
    assert covered == set((np.arange(n) * 3).tolist())


def test_reading_picks_the_best_allowed_span() -> None:
    starts, ends = np.array([0, 5, 10, 15]), np.array([4, 9, 14, 19])
    reading = Reading(starts, ends, np.log([0.1, 0.6, 0.2, 0.1]), np.log([0.7, 0.05, 0.05, 0.2]))
    # The end before the start is not allowed: best is start token 1, end token 3.
    score, start, end = reading.best(max_tokens=4)
    assert (start, end) == (5, 19) and score == pytest.approx(np.log(0.6 * 0.2))
    # At most 2 tokens: token 1 to 3 is too long, and token 0 alone (0.1 * 0.7) beats 1 to 2 (0.6 * 0.05).
    assert reading.best(max_tokens=2)[1:] == (0, 4)
    assert reading.span_score(5, 19) == pytest.approx(score)


def test_pad_states_pads_with_zeros_and_masks_only_real_tokens() -> None:
    short, long = np.ones((2, 3), np.float16), np.full((4, 3), 2.0, np.float16)
    batch, mask = pad_states([short, long])
    assert batch.shape == (2, 4, 3) and batch.dtype == torch.float32
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]
    assert batch[0, :2].eq(1).all() and batch[0, 2:].eq(0).all() and batch[1].eq(2).all()


def test_read_merges_overlapping_windows(base: BaseModel) -> None:
    net = ReaderNet(base, FIRST, "bitfit")
    states, _, _ = _tiny_case()
    a = Window(np.zeros(20, np.int32), 3, np.array([0, 4, 8]), np.array([3, 7, 11]))
    b = Window(np.zeros(20, np.int32), 3, np.array([8, 12]), np.array([11, 15]))
    merged = read(net, [[a, b]], [states[:22], states[:22]])
    # The same windows read as two passages: the same softmax, so the same numbers per token.
    apart = read(net, [[a], [b]], [states[:22], states[:22]])
    [one], (only_a, only_b) = merged.passages, apart.passages
    assert one.starts.tolist() == [0, 4, 8, 12] and one.ends.tolist() == [3, 7, 11, 15]
    # A token both windows saw keeps the better value.
    assert np.allclose(one.start_logp[:2], only_a.start_logp[:2])
    assert one.start_logp[2] == max(only_a.start_logp[2], only_b.start_logp[0])
    assert one.end_logp[3] == only_b.end_logp[1]
    assert merged.no_answer == pytest.approx(apart.no_answer)


@dataclass
class TwoPassages:
    """A reader with a random head and two one-window passages over the same token states."""

    net: ReaderNet
    a: Window
    b: Window
    states: np.ndarray


@pytest.fixture
def two_passages(base: BaseModel) -> TwoPassages:
    torch.manual_seed(3)
    net = ReaderNet(base, FIRST, "lora", 4)
    with torch.no_grad():
        net.head.weight.normal_(0, 0.5)
    states, _, _ = _tiny_case()
    a = Window(np.zeros(20, np.int32), 3, np.array([0, 4, 8]), np.array([3, 7, 11]))
    b = Window(np.zeros(20, np.int32), 5, np.array([0, 6]), np.array([5, 9]))
    return TwoPassages(net, a, b, states[:22])


def test_passages_read_together_share_one_softmax_with_no_answer(two_passages: TwoPassages) -> None:
    # One softmax over every passage token of every window and each window's <s>: what is not on
    # the passages' tokens is the no-answer probability, for the start and for the end alike.
    net, a, b, states = two_passages.net, two_passages.a, two_passages.b, two_passages.states
    readings = read(net, [[a], [b]], [states, states])
    start = sum(np.exp(r.start_logp).sum() for r in readings.passages)
    end = sum(np.exp(r.end_logp).sum() for r in readings.passages)
    assert 0 < start < 1 and 0 < end < 1
    assert readings.no_answer == pytest.approx(np.log(1 - start) + np.log(1 - end), abs=1e-4)
    # Read alone, a passage's tokens hold more of the mass than beside another.
    alone = read(net, [[a]], [states])
    assert np.exp(alone.passages[0].start_logp).sum() > np.exp(readings.passages[0].start_logp).sum()


def test_a_sure_first_passage_is_read_alone(two_passages: TwoPassages) -> None:
    net, a, b, states = two_passages.net, two_passages.a, two_passages.b, two_passages.states
    both = read(net, [[a], [b]], [states, states])
    alone = read(net, [[a]], [states])
    sure = float(np.exp(alone.passages[0].best(4)[0]))
    # Sure enough: the second passage is not read, and the first reads as it does alone.
    quick = read(net, [[a], [b]], [states, states], enough=sure * 0.99)
    assert len(quick.passages) == 1 and quick.no_answer == pytest.approx(alone.no_answer)
    assert np.allclose(quick.passages[0].start_logp, alone.passages[0].start_logp)
    # Not sure enough: both, under one softmax, exactly as without the shortcut.
    slow = read(net, [[a], [b]], [states, states], enough=min(1.0, sure * 1.01))
    assert len(slow.passages) == 2 and slow.no_answer == pytest.approx(both.no_answer)
    # Given the first passage's token states only, the others' are computed when, and only when,
    # the first is not sure enough (they are most of a reading's cost).
    asked: list[int] = []

    def rest() -> list[np.ndarray]:
        asked.append(1)
        return [states]

    assert len(read(net, [[a], [b]], [states], enough=sure * 0.99, rest=rest).passages) == 1 and not asked
    lazy = read(net, [[a], [b]], [states], enough=min(1.0, sure * 1.01), rest=rest)
    assert asked == [1] and lazy.no_answer == pytest.approx(both.no_answer)
    assert np.allclose(lazy.passages[1].start_logp, both.passages[1].start_logp)


def test_saved_reader_loads_back_with_the_same_outputs(base: BaseModel, tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = ReaderNet(base, FIRST, "lora", 4)
    with torch.no_grad():
        for p in net.trained().values():
            p.add_(torch.randn_like(p) * 0.05)
    path = tmp_path / "reader.npz"
    net.save(path, {"command": "test"})
    loaded = load_reader(path, default_model(), torch.float32)
    states, _, _ = _tiny_case()
    x, mask = torch.from_numpy(states)[None], torch.ones(1, len(states), dtype=torch.bool)
    with torch.no_grad():
        want = net(x, mask)
        for got, expected in zip(loaded(x, mask), want):
            assert torch.allclose(got, expected, atol=2e-3)  # shipped as float16
        # Loading folds the low-rank deltas into the weights, and they matter: without them the
        # outputs differ by far more than float16's rounding (~1e-4 here).
        assert all(m.rank == 0 for m in loaded.modules() if isinstance(m, Linear))
        for m in net.modules():
            if isinstance(m, Linear):
                m.lora_b.zero_()
        assert any(not torch.allclose(a, b, atol=1e-2) for a, b in zip(net(x, mask), want))


def _rewrite(path: Path, out: Path, **meta_changes: object) -> None:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = {**json.loads(str(arrays["meta"])), **meta_changes}
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(out, **arrays)


def test_loader_rejects_corrupt_and_mismatched_files(base: BaseModel, tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    ReaderNet(base, FIRST, "lora", 4).save(good, {})
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(good.read_bytes()[:200])
    other_base = tmp_path / "other-base.npz"
    _rewrite(good, other_base, digest="0123456789abcdef")
    other_shape = tmp_path / "other-shape.npz"
    _rewrite(good, other_shape, rank=8)
    for path, message in (
        (tmp_path / "missing.npz", "not a readable"),
        (corrupt, "not a readable"),
        (other_base, "another base model"),
        (other_shape, "do not match"),
    ):
        with pytest.raises(ReaderWeightsError, match=message) as caught:
            load_reader(path, default_model())
        assert "python -m eval.train_reader" in caught.value.hint


# --- the reader inside the answerer -------------------------------------------------------------------

PASSAGES = [
    "مؤتمر موسكو للأمن الدولي. شارك في المؤتمر مندوبون من 76 دولة حول العالم. "
    "وألقى وزير الدفاع سيرجي شويجو الكلمة الافتتاحية في اليوم الأول.",
    "انعقد المؤتمر في شهر أغسطس من عام 2023 بحضور عدد كبير من الخبراء.",
]


class FixedReader:
    """A `SpanReader` that always marks one string of one passage (and records what it read)."""

    def __init__(self, passage: int, answer: str) -> None:
        self.passage, self.answer = passage, answer
        self.calls: list[tuple[str, list[str]]] = []

    def read(self, question: str, passages: list[str], enough: float = 1.0) -> list[ReadSpan]:
        self.calls.append((question, passages))
        spans = [ReadSpan(i, 0, 5, -9.0) for i in range(len(passages))]
        if self.passage < len(passages):
            start = passages[self.passage].index(self.answer)
            # Token offsets may take the space before a word: the answerer trims it.
            spans[self.passage] = ReadSpan(self.passage, start - 1, start + len(self.answer), -0.5)
        return spans


def _answerer(reader: SpanReader | None, **scoring: object) -> ExtractiveAnswerer:
    return ExtractiveAnswerer(
        embedder=HashEmbedder(),
        term_weight=lambda _t: 1.0,
        # Every short answer shown: these tests are about which span is chosen, not whether it is shown.
        scoring=AnswerScoring.from_config(
            Config(), **{"abstain_threshold": 0.0, "short_answer_threshold": 0.0, **scoring}
        ),
        max_words=Config().answer_max_words,
        reader=reader,
    )


def _documents() -> list[Document]:
    return [
        Document(
            page_content=text,
            metadata={"source": f"{i}.txt", "title": "مؤتمر موسكو للأمن الدولي", "start": 0, "end": len(text)},
        )
        for i, text in enumerate(PASSAGES)
    ]


def test_the_readers_span_becomes_the_short_answer_inside_its_sentence() -> None:
    marked = "مندوبون من 76 دولة"
    reader = FixedReader(0, marked)
    question = AnswerRequest("كم عدد الدول المشاركة في المؤتمر؟", _documents())
    assert _answerer(None).invoke(question).short_answer != marked  # the span ranker's choice differs
    answer = _answerer(reader, reader_passages=2).invoke(question)
    assert answer.short_answer == marked
    cited = answer.citations[answer.short_answer_citation["n"] - 1]
    assert cited.text[answer.short_answer_citation["start"] : answer.short_answer_citation["end"]] == marked
    # The evidence is the sentence holding the span, cited, after the short answer.
    assert answer.answer.startswith(f"{marked} — شارك في المؤتمر مندوبون من 76 دولة حول العالم. [1]")
    assert reader.calls == [("كم عدد الدول المشاركة في المؤتمر؟", PASSAGES)]


def test_the_readers_span_loses_the_punctuation_at_its_edges() -> None:
    # Token offsets may take the full stop after a word: the short answer is quoted without it.
    answer = _answerer(FixedReader(0, "76 دولة حول العالم.")).invoke(
        AnswerRequest("كم عدد الدول المشاركة في المؤتمر؟", _documents())
    )
    assert answer.short_answer == "76 دولة حول العالم"
    where = answer.short_answer_citation
    assert PASSAGES[0][where["start"] : where["end"]] == "76 دولة حول العالم"


def test_the_reader_reads_only_the_best_passages_and_ranks_them() -> None:
    reader = FixedReader(1, "أغسطس من عام 2023")
    # A question of no particular kind ("when" would pass over the first passage's dateless span).
    question = "ماذا جرى في المؤتمر؟"
    one = _answerer(reader, reader_passages=1).invoke(AnswerRequest(question, _documents()))
    assert reader.calls[-1][1] == PASSAGES[:1]
    assert one.short_answer != "أغسطس من عام 2023"  # passage 2 was not read
    two = _answerer(reader, reader_passages=2).invoke(AnswerRequest(question, _documents()))
    assert two.short_answer == "أغسطس من عام 2023"
    # A rank penalty larger than the score gap keeps the first passage's span.
    ranked = _answerer(reader, reader_passages=2, reader_rank_penalty=9.0).invoke(AnswerRequest(question, _documents()))
    assert ranked.short_answer != "أغسطس من عام 2023"


class RankedReader:
    """A `SpanReader` offering several spans of the first passage, best first, with their scores."""

    def __init__(self, *offered: tuple[str, float]) -> None:
        self.offered = offered

    def read(self, question: str, passages: list[str], enough: float = 1.0) -> list[ReadSpan]:
        return [
            ReadSpan(0, passages[0].index(text), passages[0].index(text) + len(text), score, -3.0)
            for text, score in self.offered
        ]


def test_the_readers_best_span_of_the_asked_kind_wins() -> None:
    # "How many" takes the best span holding a count, though the reader ranks a name first (the
    # shipped reader answered «الصين وإيران» to "قديش مندوب حضر مؤتمر موسكو 2023؟").
    reader = RankedReader(("مؤتمر موسكو", -0.5), ("76 دولة", -1.5), ("المؤتمر", -2.0))
    question = AnswerRequest("كم عدد الدول المشاركة في المؤتمر؟", _documents())
    answer = _answerer(reader).invoke(question)
    assert answer.short_answer == "76 دولة"
    assert answer.short_answer_check["features"]["reader_margin"] == pytest.approx(-1.5 + 3.0)
    # A question that asks for no particular kind takes the reader's first choice.
    reader = RankedReader(("مندوبون من 76 دولة", -0.5), ("76 دولة", -1.5))
    answer = _answerer(reader).invoke(AnswerRequest("من شارك في المؤتمر؟", _documents()))
    assert answer.short_answer == "مندوبون من 76 دولة"
    # When no offered span is of the asked kind, the best one stays (the gate then says wrong_type).
    reader = RankedReader(("مندوبون", -0.5), ("المؤتمر", -1.0))
    assert _answerer(reader).invoke(question).short_answer == "مندوبون"


def test_reading_offers_the_n_best_spans_best_first() -> None:
    starts, ends = np.array([0, 4, 8, 12]), np.array([3, 7, 11, 15])
    reading = Reading(starts, ends, np.log([0.1, 0.6, 0.2, 0.1]), np.log([0.7, 0.05, 0.05, 0.2]))
    top = reading.top(max_tokens=4, n=3)
    assert top[0] == reading.best(max_tokens=4)
    assert [s for s, _, _ in top] == sorted((s for s, _, _ in top), reverse=True)
    assert len({(a, b) for _, a, b in top}) == 3 and all(a < b for _, a, b in top)
    # Never more than the allowed spans: 4 tokens, at most 2 long -> 4 + 3 spans.
    assert len(reading.top(max_tokens=2, n=50)) == 7


def test_a_withheld_readers_sentence_follows_the_span_rankers() -> None:
    # Unsure of the span (the gate withholds everything at 1.0): the evidence is led by the span
    # ranker's sentence, as without the reader, and the reader's sentence follows when both fit.
    question = AnswerRequest("كم عدد الدول المشاركة في المؤتمر؟", _documents())
    ranked_first = _answerer(None).invoke(question).answer.split(" — ", 1)[-1].split(" [")[0]
    assert "76 دولة" in ranked_first
    read = "أغسطس من عام 2023"
    withheld = _answerer(FixedReader(1, read), reader_passages=2, short_answer_threshold=1.0).invoke(question)
    assert withheld.short_answer == "" and withheld.short_answer_check["candidate"] == read
    assert withheld.answer.startswith(ranked_first)
    assert PASSAGES[1].split(".")[0] in withheld.answer
    # Shown, the reader's sentence leads, after the short answer.
    shown = _answerer(FixedReader(1, read), reader_passages=2).invoke(question)
    assert shown.answer.startswith(f"{read} — {PASSAGES[1].split('.')[0]}")


def test_a_span_outside_every_evidence_sentence_falls_back_to_the_span_ranker() -> None:
    # The heading is not an evidence sentence; the span ranker answers instead.
    reader = FixedReader(0, "مؤتمر موسكو")
    question = "كم عدد الدول المشاركة في المؤتمر؟"
    with_reader = _answerer(reader).invoke(AnswerRequest(question, _documents()))
    without = _answerer(None).invoke(AnswerRequest(question, _documents()))
    assert reader.calls and with_reader.short_answer == without.short_answer != "مؤتمر موسكو"
    assert with_reader.short_answer_by == without.short_answer_by == "span_ranker"


def test_the_answer_says_which_method_chose_its_short_answer() -> None:
    # A user comparing the two modes (or a reader that fell back) can see who chose the span.
    question = AnswerRequest("كم عدد الدول المشاركة في المؤتمر؟", _documents())
    assert _answerer(FixedReader(0, "76 دولة")).invoke(question).short_answer_by == "reader"
    assert _answerer(None).invoke(question).to_json()["short_answer_by"] == "span_ranker"
    abstained = _answerer(None, abstain_threshold=2.0).invoke(question)
    assert abstained.abstained and abstained.short_answer_by == ""


def test_an_english_question_about_arabic_text_is_read_too() -> None:
    # The encoder is multilingual, so the reader trained on Arabic questions reads English ones.
    reader = FixedReader(0, "76 دولة")
    answerer = _answerer(reader, cross_language_abstain_threshold=0.0)
    answer = answerer.invoke(AnswerRequest("How many countries took part?", _documents()))
    assert reader.calls and answer.short_answer == "76 دولة"


def test_answer_reader_reads_real_passages_with_the_engine(base: BaseModel) -> None:
    torch.manual_seed(0)
    reader = AnswerReader(token_encoder(), ReaderNet(base, FIRST, "lora", 4), spans_per_passage=3)
    spans = reader.read("كم عدد الدول المشاركة؟", [PASSAGES[0], "   ", PASSAGES[1] * 40])
    # Three spans per passage with text (a blank one has none), best first, inside it, at most
    # MAX_ANSWER_TOKENS long, and one no-answer score for the passages read together.
    assert [s.passage for s in spans] == [0, 0, 0, 2, 2, 2]
    assert spans[0].score >= spans[1].score >= spans[2].score and len({s.no_answer for s in spans}) == 1
    # Under one softmax: the spans and "no answer" are each less likely than all of them together.
    assert np.logaddexp.reduce([spans[0].score, spans[3].score, spans[0].no_answer]) <= 1e-6
    for s in spans:
        text = [PASSAGES[0], "", PASSAGES[1] * 40][s.passage]
        assert 0 <= s.start < s.end <= len(text) and s.score <= 0.0
        assert len(token_encoder().tokenize(text[s.start : s.end])[0]) <= MAX_ANSWER_TOKENS
    # Sure enough of the first passage (any span will do at a threshold of 0), the others are not read.
    assert {s.passage for s in reader.read("كم عدد الدول المشاركة؟", [PASSAGES[0], PASSAGES[1]], 1e-9)} == {0}


@pytest.mark.parametrize("lengths", [[382, 134, 382, 119], [5], [300, 290, 280, 20, 19, 1], list(range(1, 40))])
def test_windows_are_read_in_batches_of_similar_length(lengths: list[int]) -> None:
    batches = length_batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:  # padded to its longest window by at most a quarter of its tokens
        assert max(lengths[i] for i in batch) * len(batch) <= 1.25 * sum(lengths[i] for i in batch)
    assert length_batches([382, 134, 382, 119]) == [[0, 2], [1, 3]]


def test_windows_of_different_lengths_read_as_in_one_padded_batch(base: BaseModel) -> None:
    # Batching by length changes the cost, not the numbers: the same readings as one padded batch.
    torch.manual_seed(2)
    net = ReaderNet(base, FIRST, "lora", 4)
    states, _, _ = _tiny_case()
    long = Window(np.zeros(22, np.int32), 3, np.array([0, 4, 8]), np.array([3, 7, 11]))
    short = Window(np.zeros(4, np.int32), 3, np.array([20]), np.array([23]))
    got = read(net, [[long], [short]], [states, states[:6]])
    start, end = net(*pad_states([states, states[:6]]))
    flat = torch.cat([start[0, 3:6], start[1, 3:4], start[0, :1], start[1, :1]])
    assert got.passages[1].start_logp[0] == pytest.approx(float(start[1, 3] - torch.logsumexp(flat, 0)), abs=1e-4)
    assert np.isfinite(got.no_answer) and len(end) == 2


@pytest.mark.integration  # loads the encoder and the shipped reader twice
def test_the_shipped_reader_answers_alike_in_bfloat16_and_float32() -> None:
    # On a CPU that multiplies bfloat16 natively the reader answers in it (twice as fast here): its
    # best spans over real passages must be float32's.
    encoder = token_encoder()
    readers = [
        AnswerReader(encoder, load_reader(READER_WEIGHTS, encoder.model_path, dt))
        for dt in (torch.float32, torch.bfloat16)
    ]
    seed = sorted((PROJECT_ROOT / "seeds").glob("*.txt"))[0].read_text(encoding="utf-8")[:3000]
    for question in ("كم عدد الدول المشاركة؟", "متى عقد المؤتمر؟", "How many countries took part?"):
        exact, fast = (reader.read(question, [*PASSAGES, seed]) for reader in readers)
        assert [(s.passage, s.start, s.end) for s in exact] == [(s.passage, s.start, s.end) for s in fast]
        # As probabilities (what the short-answer gate reads): within a hundredth.
        assert np.exp([s.score for s in fast]) == pytest.approx(np.exp([s.score for s in exact]), abs=0.01)
        assert np.exp(fast[0].no_answer) == pytest.approx(np.exp(exact[0].no_answer), abs=0.01)


def test_switching_the_reader_on_without_its_weights_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(ReaderWeightsError) as caught:
        AnswerReader.load(tmp_path / "reader.npz")
    assert "python -m eval.train_reader --out" in caught.value.hint


@pytest.mark.integration  # runs the entry points in subprocesses
def test_entry_points_import_torch_only_when_the_reader_is_switched_on() -> None:
    # torch costs about 2 s of start-up; only the reader needs it, and it is off by default.
    # One interpreter imports them in turn and names the first after which torch is loaded.
    code = (
        "import importlib, sys\n"
        "for m in ['rag.chain', 'rag.__main__', 'ui.app', 'api.app', 'eval.__main__', 'eval.train_span']:\n"
        "    importlib.import_module(m)\n"
        "    if 'torch' in sys.modules: print(m); break\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)
    assert out.stdout.strip() == ""
