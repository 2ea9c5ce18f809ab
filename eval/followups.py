"""`python -m eval.followups`: does the extractive follow-up resolver leave self-contained questions alone?

    python -m eval.followups [--squad ../shared/data/arcd-train.json] [--show]

No index or model is needed: the resolver works on the question text. It reports
- seeds: every seed question asked after every other question of seeds.jsonl and followups.jsonl
  (as a one-turn history); the share returned unchanged (changed questions would change retrieval);
- follow-ups: the share of followups.jsonl questions the resolver treats as follow-ups;
- SQuAD (e.g. ARCD-train): the share of its questions that would be treated as follow-ups after
  any earlier question. ARCD questions were written beside their paragraph, so some genuinely lean
  on it ("من رسمها؟"); `--show` lists them to read.
Answer quality with and without history is measured by `python -m eval --questions
eval/questions/followups.jsonl [--no-history]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.config import PROJECT_ROOT
from eval.questions import QuestionFileError, load_jsonl, load_squad
from rag.followup import FollowUpResolver

QUESTIONS_DIR = PROJECT_ROOT / "eval" / "questions"


def seeds_unchanged(resolver: FollowUpResolver) -> tuple[int, int]:
    """(unchanged, pairs) over every seed question after every other question of both sets."""
    seeds = load_jsonl(QUESTIONS_DIR / "seeds.jsonl")
    follow_ups = load_jsonl(QUESTIONS_DIR / "followups.jsonl")
    histories = [q.question for q in seeds] + [h for q in follow_ups for h in (*q.history, q.question)]
    pairs = [(h, q.question) for q in seeds for h in histories if h != q.question]
    return sum(resolver.resolve([h], q) == q for h, q in pairs), len(pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.followups", description=__doc__.split("\n")[0])
    parser.add_argument("--squad", type=Path, help="SQuAD-format JSON whose questions are self-contained")
    parser.add_argument("--show", action="store_true", help="list the SQuAD questions read as follow-ups")
    args = parser.parse_args(argv)
    resolver = FollowUpResolver()
    try:
        unchanged, pairs = seeds_unchanged(resolver)
        follow_ups = load_jsonl(QUESTIONS_DIR / "followups.jsonl")
        squad = load_squad(args.squad)[1] if args.squad else []
    except QuestionFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    detected = sum(resolver.is_follow_up(q.question) for q in follow_ups)
    print(f"seeds left unchanged after another question: {unchanged}/{pairs} ({unchanged / pairs:.3f})")
    print(f"followups.jsonl read as follow-ups: {detected}/{len(follow_ups)} ({detected / len(follow_ups):.3f})")
    if squad:
        flagged = [q.question for q in squad if resolver.is_follow_up(q.question)]
        kept = len(squad) - len(flagged)
        print(f"{args.squad.name} left unchanged: {kept}/{len(squad)} ({kept / len(squad):.3f})")
        if args.show:
            print("\n".join(f"  {q}" for q in flagged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
