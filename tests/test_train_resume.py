"""Reader training groups a question's passages under one softmax, and is resumable (issue 26: runs on these 2 cores last hours and a session can end
mid-run): a run stopped after an epoch and started again ends where an unbroken run ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from eval import train_reader
from eval.train_reader import Example, group, shared_loss, train
from rag.readernet import Window, load_base
from rag.tokens import token_encoder


class Stopped(Exception):
    pass


def test_training_resumes_from_its_checkpoint_as_if_never_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = load_base(token_encoder().model_path, 10)
    rng = np.random.default_rng(0)
    states = [rng.normal(size=(12, 384)).astype(np.float16) for _ in range(6)]
    window = Window(np.zeros(10, np.int32), 1, np.arange(9), np.arange(1, 10))
    data = [Example(None, "", [window], [s], [(2, 4)]) for s in states]  # type: ignore[arg-type]
    settings: dict[str, Any] = {"layer": 10, "mode": "lora", "rank": 4, "lr": 1e-3, "head_lr": 1e-3, "batch": 2}
    whole = train(base, data, epochs=3, seed=0, **settings)

    checkpoint = tmp_path / "run.npz"
    save = train_reader._save_checkpoint

    def save_then_stop(*args: Any) -> None:
        save(*args)
        raise Stopped  # the session ended right after the first epoch's checkpoint

    monkeypatch.setattr(train_reader, "_save_checkpoint", save_then_stop)
    with pytest.raises(Stopped):
        train(base, data, epochs=3, seed=0, checkpoint=checkpoint, **settings)
    monkeypatch.setattr(train_reader, "_save_checkpoint", save)
    resumed = train(base, data, epochs=3, seed=0, checkpoint=checkpoint, **settings)
    for name, p in whole.trained().items():
        assert torch.allclose(p, resumed.trained()[name], atol=1e-5), name
    assert not torch.allclose(
        whole.trained()["head.weight"], train(base, data, epochs=1, seed=0, **settings).trained()["head.weight"]
    )


def _window(offset: int, tokens: int) -> Window:
    return Window(np.zeros(offset + tokens - 3, np.int32), offset, np.arange(tokens), np.arange(1, tokens + 1))


def test_the_shared_loss_is_the_answers_share_of_one_softmax_over_the_group() -> None:
    gold, other = _window(2, 3), _window(1, 2)  # candidate rows: <s>, 2, 3, 4 and <s>, 1, 2
    ex = Example(["x"], "p", [gold, other], [], [(3, 4), (0, 0)], distractors=["q"], counts=[1, 1])
    start = torch.tensor([[0.5, 9.0, 1.0, 2.0, -1.0], [0.0, -2.0, 0.3, 9.0, 9.0]])
    end = torch.tensor([[1.0, 9.0, 0.0, 0.5, 2.0], [-1.0, 1.0, 0.2, 9.0, 9.0]])
    # Row 1 of the first window is the question's (not a candidate), rows 3-4 of the second padding.
    s_rows = torch.tensor([0.5, 1.0, 2.0, -1.0, 0.0, -2.0, 0.3])
    e_rows = torch.tensor([1.0, 0.0, 0.5, 2.0, -1.0, 1.0, 0.2])
    answered = group(ex, without_gold=False)
    want = -(torch.log_softmax(s_rows, 0)[2] + torch.log_softmax(e_rows, 0)[3]) / 2
    assert shared_loss(start, end, [answered], answered.windows, 5).item() == pytest.approx(want.item(), abs=1e-5)
    # Without the gold paragraph the target is the distractor's <s>: "no answer".
    alone = group(ex, without_gold=True)
    assert alone.windows == [other] and alone.targets == [None]
    want = -(torch.log_softmax(s_rows[4:], 0)[0] + torch.log_softmax(e_rows[4:], 0)[0]) / 2
    assert shared_loss(start[1:], end[1:], [alone], alone.windows, 5).item() == pytest.approx(want.item(), abs=1e-5)


def test_a_gold_paragraph_whose_windows_miss_the_answer_is_not_taught_as_no_answer() -> None:
    # The gold span was cut off by tokenisation: reading the gold paragraph, "no answer" would be
    # a wrong target, so only the distractors are read (their target, no answer, is right).
    gold, other = _window(2, 3), _window(1, 2)
    ex = Example(["x"], "p", [gold, other], [], [(0, 0), (0, 0)], distractors=["q"], counts=[1, 1])
    assert group(ex, without_gold=False).windows == [other]
