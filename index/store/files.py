"""The file side of an index folder: its ledger (`.rag-index.json`: this folder is ours, the
generations we wrote, the documents folder), the writers' lock, atomic writes, and repair hints.

The index deletes only files its ledger names, and refuses to start in a folder that holds anything
else: `--index .` in a project folder once deleted `.env` and `.gitignore` there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from index.store.base import FORMAT_VERSION, MANIFEST, REBUILD_HINT, NotAnIndex

# The index's own ledger: proof that a folder is an index this tool made, the generations it wrote
# (the only files cleanup may delete) and the documents folder it was built from (for repair hints).
OWNER = ".rag-index.json"

LOCK = ".lock"

TMP_DIR = ".tmp"


def shown_path(path: Path) -> str:
    """A path as the user should type it: relative to the working directory when inside it, quoted for a shell."""
    absolute = path.expanduser().absolute()
    with contextlib.suppress(ValueError):
        absolute = absolute.relative_to(Path.cwd())
    return shlex.quote(str(absolute))


def rebuild_hint(folder: Path, docs_dir: Path | None = None, store_args: str = "") -> str:
    """The repair command for an index: it names the documents folder the index was built from, so
    running it exactly as printed rebuilds the right collection (never the default seeds/)."""
    docs = docs_dir if docs_dir is not None else recorded_docs_dir(folder)
    where = f"{shown_path(docs)} " if docs is not None else "DOCS_DIR "
    return f"{REBUILD_HINT} {where}--index {shown_path(folder)}{store_args}"


def read_owner(folder: Path) -> dict[str, Any] | None:
    """The folder's ledger, or None when the folder is not (yet) an index of ours."""
    try:
        owner = json.loads((folder / OWNER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and owner.get("tool") == "arabic-rag" else None


def recorded_docs_dir(folder: Path) -> Path | None:
    """The documents folder this index was last built from (ledger first: it survives a damaged manifest)."""
    for read in (lambda: read_owner(folder), lambda: json.loads((folder / MANIFEST).read_text(encoding="utf-8"))):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            record = read()
            if isinstance(record, dict) and isinstance(record.get("docs_dir"), str):
                return Path(record["docs_dir"])
    return None


def write_owner(folder: Path, owner: dict[str, Any]) -> None:
    data = json.dumps(owner, ensure_ascii=False, indent=1).encode()
    atomic_write(folder / OWNER, lambda h: h.write(data), folder / TMP_DIR)


def claim(folder: Path) -> dict[str, Any]:
    """Make sure `folder` is ours before writing anything into it, and return its ledger.

    A new or empty folder becomes an index; an index built before ledgers existed (a valid manifest)
    is adopted with only its live generation as ours; anything else is refused, because `--index .`
    in a project folder once deleted `.env` and `.gitignore` there.
    """
    owner = read_owner(folder)
    if owner is not None:
        return owner
    # Our own lock and temp folder are left when the very first build is killed: still "empty".
    entries = sorted(p.name for p in folder.iterdir() if p.name not in (LOCK, TMP_DIR)) if folder.is_dir() else []
    generations: list[int] = []
    if entries:
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            generations = [int(manifest["generation"])]
            if manifest.get("format_version") != FORMAT_VERSION or manifest["vectors_file"] not in entries:
                raise ValueError("not an index of this format")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            shown = ", ".join(entries[:3]) + (", …" if len(entries) > 3 else "")
            raise NotAnIndex(
                f"{folder} is not empty ({shown}) and is not an index: refusing to write there, so none of "
                "those files can be overwritten or deleted; choose a new or empty folder with --index"
            ) from exc
    folder.mkdir(parents=True, exist_ok=True)
    owner = {"tool": "arabic-rag", "generations": generations}
    write_owner(folder, owner)
    return owner


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path` (created if missing), held across processes until exit.
    The kernel drops it when its holder dies, so a killed build never leaves a stale lock."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def write_lock(folder: Path) -> Iterator[None]:
    """Serialise writers (CLI build, UI upload) on one index folder across processes."""
    claim(folder)
    with file_lock(folder / LOCK):
        yield


def atomic_write(path: Path, write: Any, tmp_dir: Path | None = None, mode: int | None = None) -> None:
    """Write via a temp file (in `tmp_dir`, default the target's folder; same file system), fsync,
    then rename over the target. The file is private (0600, mkstemp's) unless `mode` is given."""
    tmp_dir = tmp_dir or path.parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
