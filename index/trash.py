"""Removed and replaced documents go to a trash inside the index folder, never away.

A user who clicks "Remove", or uploads a file under a name that already exists, can get the old
file back until they empty the trash: the tool never deletes a file it did not create. The trash
lives in the index folder (which the index owns, see index/store/) so it never appears among the
user's documents and is never indexed.

Layout: trash/<id>/entry.json (what it was, why and when it left) and trash/<id>/<file name>.
The entry is written before the file moves, so a crash leaves at worst an entry without a file
(ignored) and the document still in its folder; never a file in neither place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import stat
import uuid
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import UserError
from core.i18n import t
from index.store import atomic_write, claim

TRASH_DIR = "trash"
_ENTRY = "entry.json"


class TrashError(UserError):
    """A trash operation that cannot be done; the message says why, for the user."""


class NotMoved(TrashError):
    """The file could not be moved out of the documents folder (a read-only folder, say): nothing
    was removed and the trash holds no entry for it. `reason` is the system's word for why."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(
            hint="the documents folder must be writable by the app",
            code="trash_not_moved",
            params={"name": name, "reason": reason},
        )
        self.name, self.reason = name, reason


@dataclass(frozen=True)
class TrashItem:
    """One file in the trash: its original name in the documents folder, why and when it left."""

    id: str
    name: str
    title: str
    reason: str  # "removed" or "replaced"
    removed_at: str  # ISO 8601, UTC
    bytes: int

    def label(self, lang: str | None = "en") -> str:
        """How the trash list shows it, in the page's language ("removed" was English on the Arabic page)."""
        when = self.removed_at[:16].replace("T", " ")
        kind = self.reason if self.reason in ("removed", "replaced") else "removed"  # an entry edited by hand
        return t(lang, f"trash_entry_{kind}", title=self.title, name=self.name, when=when)


def move_file(source: Path, target: Path) -> None:
    """Rename when both are on one file system; otherwise copy (atomically, fsynced) and only then
    unlink the source, so the file exists in at least one place at every moment."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != 18:  # EXDEV: another file system
            raise
        mode = stat.S_IMODE(source.stat().st_mode)  # a document keeps its mode through the trash
        atomic_write(target, lambda handle: handle.write(source.read_bytes()), mode=mode)
        try:
            source.unlink()
        except OSError:
            target.unlink()  # the source stays: one copy, not two that both claim the file
            raise


def free_name(folder: Path, name: str, taken: Collection[str] = ()) -> str:
    """`name`, or `stem (2).suffix`, `stem (3).suffix`, … : the first that names no file in `folder`
    and is not in `taken` (names already claimed by the same upload batch)."""
    path = Path(name)
    candidate, n = name, 1
    while candidate in taken or (folder / candidate).exists() or (folder / candidate).is_symlink():
        n += 1
        candidate = str(path.with_name(f"{path.stem} ({n}){path.suffix}"))
    return candidate


class Trash:
    """The trash of one documents folder, kept in its index folder."""

    def __init__(self, index_dir: Path, docs_dir: Path) -> None:
        self.index_dir = index_dir
        self.folder = index_dir / TRASH_DIR
        self.docs_dir = docs_dir

    def put(self, name: str, reason: str, title: str) -> TrashItem:
        """Move docs_dir/name into the trash; raises TrashError when it is not a file of the folder."""
        source = self.docs_dir / name
        if source.is_symlink() or not source.is_file() or not source.resolve().is_relative_to(self.docs_dir.resolve()):
            raise TrashError(code="trash_not_file", params={"name": name})
        claim(self.index_dir)
        item = TrashItem(
            id=f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}",
            name=name,
            title=title,
            reason=reason,
            removed_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            bytes=source.stat().st_size,
        )
        slot = self.folder / item.id
        slot.mkdir(parents=True)
        atomic_write(slot / _ENTRY, lambda handle: handle.write(json.dumps(asdict(item), ensure_ascii=False).encode()))
        try:
            move_file(source, slot / Path(name).name)
        except OSError as exc:
            # Before, the entry stayed and the trash listed a file still in the folder (issue 27
            # point 4): restoring it then indexed a duplicate "b (2).txt".
            shutil.rmtree(slot, ignore_errors=True)
            raise NotMoved(name, exc.strerror or str(exc)) from exc
        return item

    def items(self) -> list[TrashItem]:
        """Everything restorable, newest first."""
        found = []
        for slot in self.folder.iterdir() if self.folder.is_dir() else ():
            with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
                item = TrashItem(**json.loads((slot / _ENTRY).read_text(encoding="utf-8")))
                if item.id == slot.name and (slot / Path(item.name).name).is_file():
                    found.append(item)
        return sorted(found, key=lambda i: i.id, reverse=True)

    def get(self, item_id: str) -> TrashItem:
        for item in self.items():
            if item.id == item_id:
                return item
        raise TrashError(code="trash_gone")

    def restore(self, item: TrashItem) -> str:
        """Move an item back into the documents folder under its own name, or a free variant of it
        (a restore never overwrites a file); returns the name it now has there."""
        name = free_name(self.docs_dir, item.name)
        move_file(self.folder / item.id / Path(item.name).name, self.docs_dir / name)
        shutil.rmtree(self.folder / item.id, ignore_errors=True)
        return name

    def empty(self) -> int:
        """Delete everything in the trash for good; returns how many documents went."""
        items = self.items()
        for slot in list(self.folder.iterdir()) if self.folder.is_dir() else ():
            if slot.is_dir() and (slot / _ENTRY).exists():
                shutil.rmtree(slot, ignore_errors=True)
        return len(items)
