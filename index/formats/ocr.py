"""OCR for scanned PDF pages and images: Tesseract (ara+eng) through its command-line program.

The CLI rather than a Python binding: it ships with Debian's `tesseract-ocr` package, needs no
compiled extension, and a separate process per page is what lets pages run in parallel across
cores (each one single-threaded, OMP_THREAD_LIMIT=1, so N pages use N cores, not N×N threads).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.errors import UserError
from index.formats import Extracted, FormatError
from index.formats.repair import repair_extracted

INSTALL_HINT = "apt-get install tesseract-ocr tesseract-ocr-ara"
LANGUAGES = "ara+eng"
# 300 dpi is Tesseract's recommended input resolution; below ~200 dpi Arabic dots and marks blur.
RENDER_DPI = 300
# A page of dense Arabic takes ~5-15 s on one core here; a page still running after this is stuck.
PAGE_TIMEOUT_S = 180
# Rendered pages are capped so a page of absurd size (a poster) cannot exhaust memory:
# 300 dpi A3 is ~3,500 × 5,000 px.
MAX_RENDER_PIXELS = 40_000_000


# ~5 CPU s a page (eval.bench): 300 pages keep one upload or file under ~15 minutes on 2 cores.
MAX_OCR_PAGES = 300


class OcrUnavailable(UserError):
    """Tesseract or its Arabic data is not installed; the message names the package."""


def workers() -> int:
    """Pages OCR'd at once: one per core (Tesseract runs one thread per page here)."""
    return max(1, min(os.cpu_count() or 1, 8))


def check() -> str:
    """Path of the tesseract program, or OcrUnavailable with the install command."""
    binary = shutil.which("tesseract")
    if binary is None:
        raise OcrUnavailable(code="ocr_missing", params={"hint": INSTALL_HINT})
    listed = subprocess.run([binary, "--list-langs"], capture_output=True, text=True, timeout=30)
    if "ara" not in listed.stdout.split():
        raise OcrUnavailable(code="ocr_no_arabic", params={"hint": INSTALL_HINT})
    return binary


def ocr_image_file(binary: str, image: Path) -> str:
    """Text of one image file (one page), repaired like any extracted text."""
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    try:
        done = subprocess.run(
            [binary, str(image), "stdout", "-l", LANGUAGES, "--psm", "3"],
            capture_output=True,
            text=True,
            timeout=PAGE_TIMEOUT_S,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        raise FormatError(code="ocr_timeout", params={"seconds": PAGE_TIMEOUT_S}) from exc
    if done.returncode != 0:
        raise FormatError(code="ocr_failed", params={"error": done.stderr.strip().splitlines()[-1:] or done.returncode})
    return _paragraphs(repair_extracted(done.stdout))


def _paragraphs(text: str) -> str:
    """Tesseract separates paragraphs by blank lines and wraps lines inside them: rejoin the lines."""
    blocks = [" ".join(block.split()) for block in text.split("\n\n")]
    return "\n".join(b for b in blocks if b)


def ocr_pdf_pages(document: Any, indices: list[int]) -> dict[int, str]:
    """OCR the given 0-based pages of an open pypdfium2 document, in parallel; {index: text}.

    Pages are rendered one at a time in this thread (pdfium is not thread-safe) to a temporary PNG
    and handed to a pool of Tesseract processes; at most two pages per worker wait rendered at any
    time, so memory and temporary disk stay bounded however long the document.
    """
    binary = check()
    if len(indices) > MAX_OCR_PAGES:
        raise FormatError(code="ocr_too_many", params={"pages": len(indices), "limit": MAX_OCR_PAGES})
    out: dict[int, str] = {}
    pending: deque[tuple[int, Path, Future[str]]] = deque()
    with (
        tempfile.TemporaryDirectory(prefix="ocr-") as tmp,
        ThreadPoolExecutor(workers()) as pool,
        # A progress bar on a terminal (tqdm hides itself otherwise): OCR takes seconds a page.
        tqdm(total=len(indices), desc="OCR", unit="page", disable=None, leave=False) as bar,
    ):

        def finish_oldest() -> None:
            i, path, future = pending.popleft()
            out[i] = future.result()
            path.unlink(missing_ok=True)
            bar.update()

        for i in indices:
            page = document[i]
            try:
                width, height = page.get_size()
                scale = RENDER_DPI / 72
                if width * height * scale * scale > MAX_RENDER_PIXELS:
                    scale = (MAX_RENDER_PIXELS / (width * height)) ** 0.5
                image = page.render(scale=scale, grayscale=True).to_pil()
            finally:
                page.close()
            path = Path(tmp) / f"{i}.png"
            image.save(path)
            pending.append((i, path, pool.submit(ocr_image_file, binary, path)))
            if len(pending) >= 2 * workers():
                finish_oldest()
        while pending:
            finish_oldest()
    return out


def extract_image(data: bytes) -> Extracted:
    """A photographed or scanned page saved as an image: one page of OCR text."""
    from PIL import Image, UnidentifiedImageError

    try:
        binary = check()
    except OcrUnavailable as exc:
        raise FormatError.like(exc) from exc
    with tempfile.TemporaryDirectory(prefix="ocr-") as tmp:
        path = Path(tmp) / "page.png"
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_RENDER_PIXELS:
                    raise FormatError(code="ocr_image_large", params={"width": image.width, "height": image.height})
                image.convert("L").save(path)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
            raise FormatError(code="ocr_image_damaged", params={"error": exc}) from exc
        text = ocr_image_file(binary, path)
    if not text.strip():
        raise FormatError(code="ocr_no_text")
    return Extracted(text, "image+ocr", pages=[0], ocr_pages=[1])
