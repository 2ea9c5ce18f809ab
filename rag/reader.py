"""A fine-tuned answer reader: the question and a passage in one sequence, start/end logits per token.

The span ranker (rag/extract.py) picks among candidate spans with hand-made features; its limit
is semantic matching (ARCD: the best candidate span scores F1 0.84, the ranker's choice 0.33). A
frozen embedder's states do not fix that (branch `reader`: +0.005 F1), because no token state
has seen the question. The standard reader puts "query: Q </s></s> passage: P" in one sequence,
so attention mixes them, and trains the encoder to mark the answer's first and last token.

The network and its weights file are rag/readernet.py (torch and numpy only, so training runs on
any machine with torch); here the C engine feeds it the frozen bottom layers' states.
"""

from __future__ import annotations

from pathlib import Path

from rag.extract import ReadSpan
from rag.readernet import (
    MAX_ANSWER_TOKENS,
    QUESTION_TOKENS,
    WINDOW_POSITIONS,
    WINDOW_STRIDE,
    ReaderNet,
    load_reader,
    read,
    windows,
)
from rag.tokens import PASSAGE_PREFIX, QUERY_PREFIX, TokenEncoder, token_encoder

# The shipped reader (python -m eval.train_reader --out rag/reader.npz).
READER_WEIGHTS = Path(__file__).resolve().with_name("reader.npz")
# Spans offered per passage, best first: the answerer takes the best one of the kind the question
# asks for (a count for "كم"/"قديش"/"how many", a date for "متى"/"when"), which the reader alone
# does not always rank first.
SPANS_PER_PASSAGE = 5


class AnswerReader:
    """Question + passages -> the reader's best span in each (a `SpanReader`): the C engine runs
    the frozen bottom layers, the tuned top layers and the head run here."""

    def __init__(self, encoder: TokenEncoder, net: ReaderNet, spans_per_passage: int = SPANS_PER_PASSAGE) -> None:
        self.encoder = encoder
        self.net = net
        self.spans_per_passage = spans_per_passage

    @classmethod
    def load(cls, weights: Path) -> AnswerReader:
        encoder = token_encoder()
        return cls(encoder, load_reader(weights, encoder.model_path))

    def read(self, question: str, passages: list[str], enough: float = 1.0) -> list[ReadSpan]:
        """The best spans of each passage with text (`spans_per_passage`, best first), all passages
        in one batch under one softmax (the reader was trained so: shared normalisation), and the
        no-answer log-probability; below `enough`, the first passage alone when its best span has
        that probability (see readernet.read)."""
        q_ids = self.encoder.tokenize(question, QUERY_PREFIX, QUESTION_TOKENS)[0]
        kept, groups = [], []
        for i, text in enumerate(passages):
            tokens = self.encoder.tokenize(text, PASSAGE_PREFIX, 100_000)
            if (tokens[1] >= 0).any():
                kept.append(i)
                groups.append(windows(q_ids, tokens, self.encoder.eos, WINDOW_POSITIONS, WINDOW_STRIDE))
        if not groups:
            return []
        ids = [w.ids for ws in groups for w in ws]
        # Below `enough` the other passages' token states are computed only if the first is unsure.
        first = len(groups[0]) if enough < 1 else len(ids)
        states = self.encoder.forward(ids[:first], self.net.first)
        readings = read(self.net, groups, states, enough, lambda: self.encoder.forward(ids[first:], self.net.first))
        return [
            ReadSpan(i, start, end, score, readings.no_answer)
            for i, reading in zip(kept, readings.passages)  # the first alone when it was sure enough
            for score, start, end in reading.top(MAX_ANSWER_TOKENS, self.spans_per_passage)
        ]
