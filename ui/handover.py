"""The conversation and settings carried across the page reload that a language switch needs.

Gradio translates a page once, as it loads, so switching the interface language reloads the
page; before this, the reload cleared the chat and every setting (the reader box too). The
server keeps them under a random one-use token that the page holds in sessionStorage for the
reload: only that page finds them again, and nothing but the token passes through the browser's
storage. The values are the page's own, as Gradio sends them with every event (the chat goes to
the server with each question too), so a page can hand itself nothing it could not send anyway;
they are checked before they are shown again (`carried_values_fit`), and the chat goes through
Gradio's sanitiser as always.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any

# A reload takes a second or two, ten on a loaded phone; a token not taken back by then belongs
# to a page that was closed instead.
HANDOVER_SECONDS = 120.0
# Bounds the memory a script switching languages in a loop can hold (the oldest go first): at
# most this many pages' values, each at most HANDOVER_ITEM_BYTES (a chat of ~500 long answers;
# a longer one is not carried, the switch then shows a fresh page), all together at most
# HANDOVER_TOTAL_BYTES. Before these, 25 switches carrying a 10 M-character chat grew the UI
# process by 550 MB, kept after their time was up (issue 27 point 9).
HANDOVER_LIMIT = 256
HANDOVER_ITEM_BYTES = 2_000_000
HANDOVER_TOTAL_BYTES = 32_000_000


def carried_values_fit(values: tuple[Any, ...], modes: list[str], max_passages: int) -> bool:
    """Do the values of (chat, turns, passages, show scores, mode, reader) fit the page's controls?
    A page that sent others (a crafted request) gets a fresh page in the new language rather than
    a load that fails half way, leaving the old language's labels."""
    if len(values) != 6:
        return False
    chat, turns, passages, scores, mode, read = values
    return (
        isinstance(chat, list)
        and isinstance(turns, list)
        and all(isinstance(t, (list, tuple)) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in turns)
        and isinstance(passages, (int, float))
        and 1 <= passages <= max_passages
        and isinstance(scores, bool)
        and mode in modes
        and isinstance(read, bool)
    )


def carried_bytes(values: tuple[Any, ...]) -> int:
    """The size of values as the page sent them (JSON, UTF-8): what keeping them costs, roughly."""
    return len(json.dumps(values, ensure_ascii=False, default=str).encode())


class Handover:
    """Thread-safe store of values kept for one reload: `put` gives a token, `take` gives the
    values back once, within `seconds`. What it holds is bounded in count, per item and in total
    bytes, and items past their time go at every `put` and `take`."""

    def __init__(
        self,
        seconds: float,
        limit: int,
        item_bytes: int = HANDOVER_ITEM_BYTES,
        total_bytes: int = HANDOVER_TOTAL_BYTES,
    ) -> None:
        self.seconds, self.limit = seconds, limit
        self.item_bytes, self.total_bytes = item_bytes, total_bytes
        self._kept: OrderedDict[str, tuple[float, int, tuple[Any, ...]]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def held_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size, _ in self._kept.values())

    def put(self, values: tuple[Any, ...]) -> str:
        """A token for `values`, or "" when they are too large to keep (the page reloads fresh)."""
        size = carried_bytes(values)
        with self._lock:
            self._expire(time.monotonic())
            if size > self.item_bytes:
                return ""
            token = secrets.token_urlsafe(24)
            self._kept[token] = (time.monotonic() + self.seconds, size, values)
            total = sum(kept for _, kept, _ in self._kept.values())
            while len(self._kept) > self.limit or total > self.total_bytes:
                total -= self._kept.popitem(last=False)[1][1]
        return token

    def take(self, token: str) -> tuple[Any, ...] | None:
        """The values kept under `token`, or None (unknown, already taken, or too late)."""
        with self._lock:
            kept = self._kept.pop(token, None) if token else None
            now = time.monotonic()
            self._expire(now)
        if kept is None or kept[0] < now:
            return None
        return kept[2]

    def _expire(self, now: float) -> None:
        for stale in [t for t, (deadline, _, _) in self._kept.items() if deadline < now]:
            del self._kept[stale]
