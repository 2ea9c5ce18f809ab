"""The conversation and settings carried across the page reload that a language switch needs, and
each tab's conversation kept across any reload.

Gradio translates a page once, as it loads, so switching the interface language reloads the
page; before this, the reload cleared the chat and every setting (the reader box too). The
server keeps them under a random one-use token that the page holds in sessionStorage for the
reload: only that page finds them again, and nothing but the token passes through the browser's
storage. The values are the page's own, as Gradio sends them with every event (the chat goes to
the server with each question too), so a page can hand itself nothing it could not send anyway;
they are checked before they are shown again (`carried_values_fit`), and the chat goes through
Gradio's sanitiser as always.

A plain reload (or a phone that drops a background tab) lost the whole conversation (issue 29):
`Conversations` keeps each tab's chat under a random id its page holds in sessionStorage, saved
after every answer, for a day, bounded the same way.
"""

from __future__ import annotations

import json
import re
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
# A tab's conversation lasts a day after its last answer; at most this many tabs' chats are kept
# (the least recently saved go first), within the same byte bounds.
CONVERSATION_SECONDS = 24 * 3600.0
CONVERSATION_LIMIT = 512
# The id a page makes for its conversation: 36 hex digits from crypto.getRandomValues; anything
# else (a crafted request) keeps nothing.
CONVERSATION_ID = re.compile(r"[0-9a-f]{32,64}")


def carried_values_fit(values: tuple[Any, ...], modes: list[str], max_passages: int) -> bool:
    """Do the values of (chat, turns, draft question, passages, show scores, mode, reader) fit the
    page's controls? A page that sent others (a crafted request) gets a fresh page in the new
    language rather than a load that fails half way, leaving the old language's labels."""
    if len(values) != 7:
        return False
    chat, turns, draft, passages, scores, mode, read = values
    return (
        conversation_fits((chat, turns))
        and isinstance(draft, str)
        and isinstance(passages, (int, float))
        and 1 <= passages <= max_passages
        and isinstance(scores, bool)
        and mode in modes
        and isinstance(read, bool)
    )


def conversation_fits(values: tuple[Any, ...]) -> bool:
    """Is this (chat, turns) as the page's chat and its history hold them?"""
    if len(values) != 2:
        return False
    chat, turns = values
    return (
        isinstance(chat, list)
        and all(isinstance(m, dict) for m in chat)
        and isinstance(turns, list)
        and all(isinstance(t, (list, tuple)) and len(t) == 2 and all(isinstance(x, str) for x in t) for t in turns)
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
        token = secrets.token_urlsafe(24)
        return token if self._keep(token, values) else ""

    def take(self, token: str) -> tuple[Any, ...] | None:
        """The values kept under `token`, or None (unknown, already taken, or too late)."""
        return self._get(token, forget=True)

    def _keep(self, key: str, values: tuple[Any, ...]) -> bool:
        """Keep `values` under `key` (replacing what it held) until `seconds` from now; False when
        they are too large to keep."""
        size = carried_bytes(values)
        with self._lock:
            self._expire(time.monotonic())
            self._kept.pop(key, None)
            if size > self.item_bytes:
                return False
            self._kept[key] = (time.monotonic() + self.seconds, size, values)
            total = sum(kept for _, kept, _ in self._kept.values())
            while len(self._kept) > self.limit or total > self.total_bytes:
                total -= self._kept.popitem(last=False)[1][1]
        return True

    def _get(self, key: str, forget: bool) -> tuple[Any, ...] | None:
        with self._lock:
            kept = (self._kept.pop(key, None) if forget else self._kept.get(key)) if key else None
            now = time.monotonic()
            self._expire(now)
        if kept is None or kept[0] < now:
            return None
        return kept[2]

    def _expire(self, now: float) -> None:
        for stale in [t for t, (deadline, _, _) in self._kept.items() if deadline < now]:
            del self._kept[stale]


class Conversations(Handover):
    """Each tab's (chat, turns), kept under the id its page holds in sessionStorage: saved after
    every answer, shown again when the page reloads, forgotten by "New conversation"."""

    def __init__(self, seconds: float = CONVERSATION_SECONDS, limit: int = CONVERSATION_LIMIT) -> None:
        super().__init__(seconds, limit)

    def save(self, key: str, chat: list[Any], turns: list[Any], records: dict[str, Any]) -> bool:
        """Keep the conversation with its answers' feedback records (its day starts again); False
        for an id no page makes, or one too large."""
        return bool(CONVERSATION_ID.fullmatch(key or "")) and self._keep(key, (chat, turns, records))

    def load(self, key: str) -> tuple[list[Any], list[Any], dict[str, Any]] | None:
        """The tab's conversation, or None (a new tab, a day without answers, or evicted)."""
        values = self._get(key, forget=False) if CONVERSATION_ID.fullmatch(key or "") else None
        if values is None or len(values) != 3 or not conversation_fits(values[:2]) or not isinstance(values[2], dict):
            return None
        return values[0], values[1], values[2]

    def forget(self, key: str) -> None:
        self._get(key, forget=True)
