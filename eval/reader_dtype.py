"""`python -m eval.reader_dtype`: does the reader answer alike in bfloat16 and in float32?

    python -m eval.reader_dtype [--set arcd --set xquad-ar ...] [--questions 300]

On a CPU that multiplies bfloat16 natively the reader answers in it (`rag.readernet.answering_dtype`:
twice as fast on this machine). This reads each sampled question with its gold paragraph and two
other paragraphs of its set (the product reads three passages together) in both number types and
prints, per set, how often the best span is the same and how far the best span's and the
no-answer's log-probabilities move. The shipped reader was trained on these sets, so this measures
agreement, not accuracy; accuracy through the product is `python -m eval --questions ...`.
"""

from __future__ import annotations

import argparse
import random
import sys

import numpy as np
import torch

from eval.questions import SQUAD_SETS, squad_set
from rag.extract import ReadSpan
from rag.reader import READER_WEIGHTS, AnswerReader
from rag.readernet import load_reader
from rag.tokens import token_encoder


def best(spans: list[ReadSpan]) -> tuple[float, int, int, int]:
    """(log-probability, passage, start, end) of the best span of any passage."""
    top = max(spans, key=lambda s: s.score)
    return top.score, top.passage, top.start, top.end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.reader_dtype", description=__doc__.split("\n")[0])
    parser.add_argument("--set", action="append", dest="sets", help=f"a set ({', '.join(SQUAD_SETS)}); default all")
    parser.add_argument("--questions", type=int, default=300, help="questions sampled per set (default 300)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    encoder = token_encoder()
    readers = [
        AnswerReader(encoder, load_reader(READER_WEIGHTS, encoder.model_path, dtype))
        for dtype in (torch.float32, torch.bfloat16)
    ]
    print("set                questions  same_best_span  best_dlogp_p50  best_dlogp_p95  no_answer_p50  no_answer_p95")
    for name in args.sets or list(SQUAD_SETS):
        documents, questions = squad_set(name).load()
        text = {str(d.metadata["source"]): d.page_content for d in documents}
        rng = random.Random(args.seed)
        sample = rng.sample(questions, min(args.questions, len(questions)))
        same, moved, no_answer = 0, [], []
        for q in sample:
            passages = [text[s] for s in [str(q.doc), *rng.sample([s for s in text if s != q.doc], 2)]]
            with torch.inference_mode():
                exact, fast = (reader.read(q.question, passages) for reader in readers)
            same += best(exact)[1:] == best(fast)[1:]
            moved.append(abs(best(exact)[0] - best(fast)[0]))
            no_answer.append(abs(exact[0].no_answer - fast[0].no_answer))
        p = np.percentile
        print(
            f"{name:<18} {len(sample):>9}  {same / len(sample):>14.3f}  {p(moved, 50):>14.4f}  {p(moved, 95):>14.4f}"
            f"  {p(no_answer, 50):>13.4f}  {p(no_answer, 95):>13.4f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
