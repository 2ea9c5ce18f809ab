"""`python -m eval.calibrate [--data arcd --data xquad-ar ...] [--reader | --reader-weights F] [--write]`:
fit the short-answer gate (rag/short_gate.py) held out and report precision against coverage.

Every question of the chosen sets goes through the product's pipeline with the gate open (every
short answer shown), and each answer's gate features are kept with whether its short answer was
right (token F1 ≥ 0.5 against the gold). The logistic model is then fitted with folds by article
within each set (the folds of eval.train_reader), so each question's probability comes from a model
that never saw its article; the threshold is the lowest probability at which the shown answers,
pooled over the sets, reach `--precision`. With `--write`, the model fitted on every question is
written to rag/short_gate.json with that threshold and the held-out figures.

`short_precision` is the share of shown short answers that are right, `short_coverage` the share of
answerable questions that get one: the figures eval/ANSWERS.md reports.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from core.config import Config
from eval.metrics import mean, token_f1
from eval.questions import SQUAD_SETS, squad_set
from eval.runner import Corpus, for_corpus, prepare_index
from eval.train_span import article, article_folds
from rag.chain import Pipeline
from rag.short_gate import FEATURES, GATE_WEIGHTS, ShortAnswerGate, fit

RIGHT_F1 = 0.5  # a short answer counts as right from this token F1 on (issue 26's short_precision)


def collect(
    config: Config, names: list[str], folds: int, only_folds: list[int] | None, reader: Path | None, cache: Path | None
) -> list[dict[str, Any]]:
    """One record per answerable question: set, fold, and (when answered) features and F1.
    With `cache` (a folder), each set's records are kept there and reused by a later run."""
    records: list[dict[str, Any]] = []
    for name in names:
        source = squad_set(name)
        documents, questions = source.load()
        fold_of = article_folds({article(q) for q in questions}, folds)
        kept = cache / f"{name}.json" if cache else None
        if kept is not None and kept.exists():
            records += json.loads(kept.read_text(encoding="utf-8"))
            continue
        start = len(records)
        corpus = Corpus(f"squad-{source.path.stem}", documents=tuple(documents))
        set_config = for_corpus(config, corpus)
        pipeline = Pipeline(set_config, index=prepare_index(set_config, corpus, show_progress=True))
        answerer = pipeline.answerer
        answerer.scoring.short_gate = ShortAnswerGate.open()
        if reader is not None:
            from rag.reader import AnswerReader  # torch: only when a reader is asked for

            answerer.reader = AnswerReader.load(reader)
        asked = [q for q in questions if q.answerable and (not only_folds or fold_of[article(q)] in only_folds)]
        for q in tqdm(asked, desc=name, unit="q"):
            answer = pipeline.ask(q.question)
            check = answer.short_answer_check
            if answer.abstained or not check:
                records.append({"set": name, "fold": fold_of[article(q)], "article": article(q), "abstained": True})
                continue
            f1 = token_f1(check["candidate"], q.answers)
            records.append(
                {
                    "set": name,
                    "fold": fold_of[article(q)],
                    "article": article(q),
                    "abstained": False,
                    "id": q.id,
                    "question": q.question,
                    "candidate": check["candidate"],
                    "by": check["by"],
                    "features": check["features"],
                    "f1": f1,
                }
            )
        if kept is not None:
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.write_text(json.dumps(records[start:], ensure_ascii=False), encoding="utf-8")
    return records


def held_out_probabilities(records: list[dict[str, Any]], folds: int, l2: float) -> np.ndarray:
    """Each answered record's probability from a model fitted without its article (folds by
    article over all the sets, so this works on the questions of one reader's held-out fold too)."""
    x = np.array([[r["features"][f] for f in FEATURES] for r in records], dtype=np.float64)
    y = np.array([r["f1"] >= RIGHT_F1 for r in records], dtype=np.float64)
    # XQuAD's two languages share articles, and a pooled run ("set@folder") asks the same questions.
    groups = [f"{r['set'].split('@')[0].split('-')[0]}:{r['article']}" for r in records]
    fold_of = article_folds(set(groups), folds)
    fold = np.array([fold_of[g] for g in groups])
    out = np.zeros(len(records))
    for k in sorted(set(fold.tolist())):
        train = fold != k
        if train.sum() == 0 or len(set(y[train].tolist())) < 2:
            out[~train] = y[train].mean() if train.any() else 0.5
            continue
        m, s, w, b = fit(x[train], y[train], l2)
        out[~train] = 1.0 / (1.0 + np.exp(-(((x[~train] - m) / s) @ w + b)))
    return out


def threshold_for(probabilities: np.ndarray, right: np.ndarray, precision: float) -> float:
    """The lowest threshold whose shown answers (probability ≥ it) are right at `precision` or
    better, over thresholds at which at least 20 answers are shown (1.0 if none qualifies)."""
    order = np.argsort(-probabilities, kind="stable")
    hits = np.cumsum(right[order])
    shown = np.arange(1, len(order) + 1)
    good = (hits / shown >= precision) & (shown >= 20)
    if not good.any():
        return 1.0
    last = int(np.nonzero(good)[0].max())
    return float(probabilities[order][last])


def report(records: list[dict[str, Any]], probabilities: np.ndarray, threshold: float) -> dict[str, dict[str, float]]:
    """Per set (and all): answered, shown, short_precision, short_coverage, and F1 without and with the gate."""
    answered = [r for r in records if not r["abstained"]]
    p_of = {id(r): p for r, p in zip(answered, probabilities)}
    rows: dict[str, dict[str, float]] = {}
    for name in [*sorted({r["set"] for r in records}), "all"]:
        rs = [r for r in records if name in ("all", r["set"])]
        got = [r for r in rs if not r["abstained"]]
        shown = [r for r in got if p_of[id(r)] >= threshold]
        rows[name] = {
            "answerable": float(len(rs)),
            "answered": float(len(got)),
            "candidate_f1": mean([r["f1"] for r in got]) * len(got) / max(1, len(rs)),
            "candidate_precision": mean([float(r["f1"] >= RIGHT_F1) for r in got]),
            "short_precision": mean([float(r["f1"] >= RIGHT_F1) for r in shown]),
            "short_coverage": len(shown) / max(1, len(rs)),
            "short_f1_shown": mean([r["f1"] for r in shown]) * len(shown) / max(1, len(rs)),
        }
    return rows


def curve(records: list[dict[str, Any]], probabilities: np.ndarray) -> list[tuple[float, float, float]]:
    """(threshold, coverage, precision) at every tenth of the pooled answered questions."""
    answered = [r for r in records if not r["abstained"]]
    right = np.array([r["f1"] >= RIGHT_F1 for r in answered], dtype=np.float64)
    order = np.argsort(-probabilities, kind="stable")
    out = []
    for share in np.linspace(0.1, 1.0, 10):
        n = max(1, round(share * len(order)))
        out.append((float(probabilities[order][n - 1]), n / len(records), float(right[order][:n].mean())))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.calibrate", description=__doc__)
    parser.add_argument("--data", action="append", help=f"repeatable: {', '.join(SQUAD_SETS)} (default: all)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument(
        "--only-fold",
        type=int,
        action="append",
        help="ask only this fold's questions (repeatable; held out for a fold reader)",
    )
    parser.add_argument("--report", action="append", help="sets only reported, not fitted on (repeatable)")
    parser.add_argument("--reader", action="store_true", help="the shipped reader picks the short answer")
    parser.add_argument("--reader-weights", type=Path, help="this reader (NPZ) picks the short answer")
    parser.add_argument("--precision", type=float, default=0.80, help="held-out precision the threshold aims at")
    parser.add_argument("--l2", type=float, default=1.0)
    parser.add_argument("--records", type=Path, help="folder: reuse each set's records found there, save new ones")
    parser.add_argument(
        "--pool",
        type=Path,
        action="append",
        default=[],
        help="also fit on the records of another run (its --records folder; repeatable): one gate for both modes",
    )
    parser.add_argument("--write", action="store_true", help=f"write the model fitted on everything to {GATE_WEIGHTS}")
    args = parser.parse_args()
    names = args.data or list(SQUAD_SETS)
    config = Config(answer_reader=args.reader)
    records = collect(config, names, args.folds, args.only_fold, args.reader_weights, args.records)
    for folder in args.pool:
        records += [
            {**r, "set": f"{r['set']}@{folder.name}"}
            for path in sorted(folder.glob("*.json"))
            if path.stem in names
            for r in json.loads(path.read_text(encoding="utf-8"))
        ]
    checks = collect(config, args.report or [], args.folds, None, args.reader_weights, args.records)
    answered = [r for r in records if not r["abstained"]]
    right = np.array([r["f1"] >= RIGHT_F1 for r in answered], dtype=np.float64)
    probabilities = held_out_probabilities(answered, args.folds, args.l2)
    threshold = threshold_for(probabilities, right, args.precision)
    x = np.array([[r["features"][f] for f in FEATURES] for r in answered], dtype=np.float64)
    m, s, w, b = fit(x, right, args.l2)
    # Sets only reported are scored by the model fitted on all the others: held out for the gate.
    checked = [r for r in checks if not r["abstained"]]
    xc = np.array([[r["features"][f] for f in FEATURES] for r in checked], dtype=np.float64).reshape(-1, len(FEATURES))
    rows = report(
        records + checks,
        np.concatenate([probabilities, 1.0 / (1.0 + np.exp(-(((xc - m) / s) @ w + b)))]),
        threshold,
    )
    print(f"threshold {threshold:.3f} (held-out precision target {args.precision:.2f})")
    columns = list(next(iter(rows.values())))
    print("set        " + "  ".join(f"{c:>19}" for c in columns))
    for name, row in rows.items():
        shown = [f"{row[c]:.0f}" if c in ("answerable", "answered") else f"{row[c]:.3f}" for c in columns]
        print(f"{name:<10} " + "  ".join(f"{v:>19}" for v in shown))
    print("pooled curve (threshold, coverage, precision):")
    for t, coverage, precision in curve(records, probabilities):
        print(f"  {t:.3f}  {coverage:.3f}  {precision:.3f}")
    if args.write:
        info = {
            # As run: --reader-weights and --pool name the fold reader and the default run's records
            # (eval/ANSWERS.md gives the commands that make them).
            "command": "python -m eval.calibrate " + " ".join(sys.argv[1:]),
            "precision_target": args.precision,
            "held_out": rows,
        }
        ShortAnswerGate(m, s, w, b, round(threshold, 4), info).save(GATE_WEIGHTS)
        print(f"wrote {GATE_WEIGHTS}")


if __name__ == "__main__":
    main()
