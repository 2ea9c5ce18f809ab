"""`python -m eval.pdf_extractors`: which PDF library reads Arabic text layers best.

Prints Chromium-made Arabic PDFs (seeds/ and ARCD-train text, one- and two-column) and scores each
candidate by character error rate (CER: edit distance / reference length) against the source text,
before and after the shared repair step (`index.formats.repair.repair_extracted`, plus visual-order repair
where a library returns visual order). Writes docs/PDF_EXTRACTORS.md unless --no-report.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from eval.pdf_fixtures import REPO_ROOT, Section, arcd_sections, print_pdf, rtl_html, seed_paragraphs
from index.formats.repair import repair_extracted, visual_to_logical

REPORT = REPO_ROOT / "docs" / "PDF_EXTRACTORS.md"


def cer(hypothesis: str, reference: str) -> float:
    """Levenshtein distance / len(reference), whitespace runs collapsed to one space on both sides.

    Row-by-row dynamic programming in numpy: the insertion term along a row is a running minimum
    (row[j] = j + min_k<=j (tmp[k] - k)), so each row is a few vector operations.
    """
    hyp = np.frombuffer(" ".join(hypothesis.split()).encode("utf-32-le"), dtype=np.uint32)
    ref = np.frombuffer(" ".join(reference.split()).encode("utf-32-le"), dtype=np.uint32)
    if len(ref) == 0:
        return float(len(hyp) > 0)
    idx = np.arange(len(hyp) + 1)
    row = idx.copy()
    for r in ref:
        tmp = np.empty_like(row)
        tmp[0] = row[0] + 1
        tmp[1:] = np.minimum(row[1:] + 1, row[:-1] + (hyp != r))
        row = np.minimum.accumulate(tmp - idx) + idx
    return float(row[-1]) / len(ref)


def _pdfium(path: Path) -> list[str]:
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(path)
    try:
        return [document[i].get_textpage().get_text_range() for i in range(len(document))]
    finally:
        document.close()


def _pdfplumber(path: Path) -> list[str]:
    import pdfplumber

    with pdfplumber.open(path) as pdf:
        return [page.extract_text() or "" for page in pdf.pages]


def _pypdf(path: Path) -> list[str]:
    import pypdf

    return [page.extract_text() or "" for page in pypdf.PdfReader(path).pages]


def _visual(pages: list[str]) -> list[str]:
    return ["\n".join(visual_to_logical(line) for line in page.split("\n")) for page in pages]


def _loader(path: Path) -> list[str]:
    """The project's own PDF loader (chosen library + all repairs + header/footer removal)."""
    from index.formats.pdf import extract_pdf

    return [extract_pdf(path.read_bytes()).text]


CANDIDATES: dict[str, tuple[str, Callable[[Path], list[str]], bool]] = {
    # name: (licence, extractor, returns visual order)
    "pypdfium2 5.15.2": ("Apache-2.0 / BSD-3", _pdfium, False),
    "pdfplumber 0.11.10 (pdfminer.six)": ("MIT", _pdfplumber, True),
    "pypdf 7.1.1": ("BSD-3", _pypdf, False),
}


def fixtures(folder: Path) -> list[tuple[str, Path, str]]:
    """(name, pdf, reference text) for each test document."""
    seeds = seed_paragraphs()
    arcd = arcd_sections(12)
    docs = {
        "seeds, 1 column": (
            "مقالات",
            [Section("مؤتمر موسكو", seeds[:8]), Section("تتمة", seeds[8:], new_page=True)],
            1,
        ),
        "ARCD, 1 column": ("مقالات ويكيبيديا", arcd[:6], 1),
        "ARCD, 2 columns": ("مقالات في عمودين", arcd[6:12], 2),
    }
    out: list[tuple[str, Path, str]] = []
    for name, (title, sections, columns) in docs.items():
        if not sections:
            continue
        pdf = print_pdf(rtl_html(title, sections, columns), folder / f"{len(out)}.pdf")
        reference = "\n".join([title] + [t for s in sections for t in [s.heading, *s.paragraphs]])
        out.append((name, pdf, reference))
    return out


def measure(folder: Path) -> tuple[list[dict[str, Any]], list[str]]:
    rows = []
    docs = fixtures(folder)
    for name, (licence, extract, visual) in {
        **CANDIDATES,
        "project loader (index.formats.pdf)": ("-", _loader, False),
    }.items():
        raw_total = fixed_total = seconds = 0.0
        per_doc = []
        pages = 0
        for _doc_name, pdf, reference in docs:
            started = time.perf_counter()
            extracted = extract(pdf)
            seconds += time.perf_counter() - started
            pages += len(_pdfium(pdf))
            raw = "\n".join(extracted)
            fixed = repair_extracted("\n".join(_visual(extracted) if visual else extracted))
            raw_cer, fixed_cer = cer(raw, reference), cer(fixed, reference)
            raw_total += raw_cer
            fixed_total += fixed_cer
            per_doc.append(fixed_cer)
        rows.append(
            {
                "name": name,
                "licence": licence,
                "raw": raw_total / len(docs),
                "fixed": fixed_total / len(docs),
                "per_doc": per_doc,
                "pages_per_s": pages / seconds if seconds else 0.0,
            }
        )
    return rows, [d[0] for d in docs]


def report(rows: list[dict[str, Any]], doc_names: list[str]) -> str:
    head = "| extractor | licence | CER raw | CER repaired | " + " | ".join(doc_names) + " | pages/s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        per = " | ".join(f"{v:.3f}" for v in r["per_doc"])
        lines.append(
            f"| {r['name']} | {r['licence']} | {r['raw']:.3f} | {r['fixed']:.3f} | {per} | {r['pages_per_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows, names = measure(Path(tmp))
    table = report(rows, names)
    print(table)
    if not args.no_report:
        text = REPORT.read_text(encoding="utf-8") if REPORT.exists() else ""
        marker = re.compile(r"<!-- table -->.*<!-- /table -->", re.S)
        block = f"<!-- table -->\n{table}\n<!-- /table -->"
        REPORT.write_text(marker.sub(block, text) if marker.search(text) else block + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
