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

import secrets
import threading
import time
from collections import OrderedDict
from typing import Any

# A reload takes a second or two, ten on a loaded phone; a token not taken back by then belongs
# to a page that was closed instead.
HANDOVER_SECONDS = 120.0
# Bounds the memory a script switching languages in a loop can hold (the oldest go first).
HANDOVER_LIMIT = 256


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


class Handover:
    """Thread-safe store of values kept for one reload: `put` gives a token, `take` gives the
    values back once, within `seconds`."""

    def __init__(self, seconds: float, limit: int) -> None:
        self.seconds, self.limit = seconds, limit
        self._kept: OrderedDict[str, tuple[float, tuple[Any, ...]]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, values: tuple[Any, ...]) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._kept[token] = (time.monotonic() + self.seconds, values)
            while len(self._kept) > self.limit:
                self._kept.popitem(last=False)
        return token

    def take(self, token: str) -> tuple[Any, ...] | None:
        """The values kept under `token`, or None (unknown, already taken, or too late)."""
        with self._lock:
            kept = self._kept.pop(token, None) if token else None
            now = time.monotonic()
            for stale in [t for t, (deadline, _) in self._kept.items() if deadline < now]:
                del self._kept[stale]
        if kept is None or kept[0] < now:
            return None
        return kept[1]
