"""Arabic test documents made on this machine: RTL HTML printed to PDF by headless Chromium.

Shared by the extractor comparison (`python -m eval.pdf_extractors`) and the format tests, so both
measure the same kind of file a user's word processor or browser would produce.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ARCD_TRAIN = REPO_ROOT.parent / "shared" / "data" / "arcd-train.json"
# Chromium prints a 3-page document in ~2.5 s here; a cold first start can take far longer.
PRINT_TIMEOUT_S = 120


@dataclass(frozen=True)
class Section:
    """A heading and its paragraphs; `new_page` starts it on a fresh page."""

    heading: str
    paragraphs: list[str]
    new_page: bool = False


def chromium() -> str | None:
    """The Chromium binary, or None (callers skip with a reason)."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def rtl_html(title: str, sections: list[Section], columns: int = 1) -> str:
    """A right-to-left page set in Noto Naskh Arabic, one <h2> per section."""
    css = (
        "body{font-family:'Noto Naskh Arabic',serif;font-size:13pt;line-height:1.7;margin:0}"
        "h1{font-size:18pt} h2{font-size:15pt} @page{margin:2cm 1.8cm}"
    )
    if columns > 1:  # only then: a multi-column container ignores page breaks inside it
        css += f"main{{column-count:{columns};column-gap:1.2cm}}"
    body = []
    for section in sections:
        style = ' style="break-before:page"' if section.new_page else ""
        body.append(f"<h2{style}>{html.escape(section.heading)}</h2>")
        body.extend(f"<p>{html.escape(p)}</p>" for p in section.paragraphs)
    return (
        f'<!doctype html><html lang="ar" dir="rtl"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{css}</style></head><body><h1>{html.escape(title)}</h1><main>{''.join(body)}</main></body></html>"
    )


def print_pdf(page: str, out: Path, header_footer: bool = False) -> Path:
    """Print HTML to `out` with headless Chromium. `header_footer` adds the browser's running
    header (date, title) and footer (file URL, "2/3" page numbers), as "Print to PDF" does."""
    binary = chromium()
    if binary is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "page.html"
        source.write_text(page, encoding="utf-8")
        subprocess.run(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                *([] if header_footer else ["--no-pdf-header-footer"]),
                f"--user-data-dir={tmp}/profile",
                f"--print-to-pdf={out}",
                source.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=PRINT_TIMEOUT_S,
        )
    return out


def seed_paragraphs() -> list[str]:
    """The paragraphs of seeds/, in file order."""
    out: list[str] = []
    for path in sorted((REPO_ROOT / "seeds").glob("*.txt")):
        out.extend(p.strip() for p in path.read_text(encoding="utf-8").split("\n") if p.strip())
    return out


def arcd_sections(n: int, path: Path = ARCD_TRAIN) -> list[Section]:
    """The first `n` ARCD-train articles as sections (title + their paragraphs); [] when absent."""
    if not path.exists():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    return [Section(a["title"], [p["context"].strip() for p in a["paragraphs"]]) for a in data[:n]]
