"""Reader training is resumable (issue 26: runs on these 2 cores last hours and a session can end
mid-run): a run stopped after an epoch and started again ends where an unbroken run ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from eval import train_reader
from eval.train_reader import Example, train
from rag.readernet import load_base
from rag.tokens import token_encoder


class Stopped(Exception):
    pass


def test_training_resumes_from_its_checkpoint_as_if_never_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = load_base(token_encoder().model_path, 10)
    rng = np.random.default_rng(0)
    states = [rng.normal(size=(12, 384)).astype(np.float16) for _ in range(6)]
    data = [Example(None, "", [], [s], [(2, 4)]) for s in states]  # type: ignore[arg-type]
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
