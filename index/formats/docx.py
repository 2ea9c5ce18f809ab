"""Word (.docx) to text with python-docx (MIT): paragraphs and tables in order, headings as sections.

A .docx is a ZIP archive, so the archive is checked before python-docx parses it: it must hold
word/document.xml (else it is some other ZIP renamed), and its declared uncompressed size must stay
within bounds (a zip bomb declares gigabytes that a few kilobytes expand into).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from typing import Any

from index.formats import Extracted, FormatError, from_blocks

# Real documents: the XML of a 300-page report is ~10 MB; images are stored, not parsed.
MAX_UNCOMPRESSED_BYTES = 300 * 2**20
MAX_XML_BYTES = 64 * 2**20
# Text XML deflates ~5-20×; ratios far above that on a big member are a bomb, not prose.
MAX_RATIO = 200
_HEADING_STYLES = ("heading", "title", "عنوان")


def check_archive(data: bytes) -> set[str]:
    """Reject renamed ZIPs and zip bombs from the central directory, before decompressing anything;
    returns the archive's member names."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise FormatError(code="unreadable_docx_zip", params={"error": exc}) from exc
    with archive:
        infos = archive.infolist()
        names = {info.filename for info in infos}
        if "word/document.xml" not in names:
            raise FormatError(code="unreadable_docx_word")
        total = sum(info.file_size for info in infos)
        if total > MAX_UNCOMPRESSED_BYTES:
            raise FormatError(
                code="unreadable_docx_expands",
                params={"size": f"{total / 2**20:.0f}", "limit": MAX_UNCOMPRESSED_BYTES // 2**20},
            )
        for info in infos:
            if info.filename.endswith(".xml") and info.file_size > MAX_XML_BYTES:
                raise FormatError(
                    code="unreadable_docx_part", params={"part": info.filename, "size": f"{info.file_size / 2**20:.0f}"}
                )
            if info.file_size > 2**20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise FormatError(code="unreadable_docx_bomb")
    return names


def extract_docx(data: bytes) -> Extracted:
    """Body paragraphs and table rows in document order; Heading/Title styles start sections."""
    names = check_archive(data)
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # python-docx raises KeyError, ValueError, lxml errors… on bad parts
        raise FormatError(code="unreadable_docx_damaged", params={"error": f"{type(exc).__name__}: {exc}"}) from exc
    # Without docProps/core.xml python-docx makes up properties titled "Word Document": no title.
    title = document.core_properties.title if "docProps/core.xml" in names else ""

    def blocks() -> Iterator[tuple[bool, str]]:
        for item in document.iter_inner_content():
            if isinstance(item, Paragraph):
                yield _is_heading(item), item.text
            elif isinstance(item, Table):
                for row in item.rows:
                    cells: list[str] = []
                    for cell in row.cells:
                        text = " ".join(cell.text.split())
                        if text and (not cells or cells[-1] != text):  # merged cells repeat their text
                            cells.append(text)
                    yield False, " | ".join(cells)

    return from_blocks(blocks(), "docx", title or "")


def _is_heading(paragraph: Any) -> bool:
    """A Heading/Title style by name, by its id when styles.xml does not define it (python-docx
    then reports "Normal"), or an outline level 0-8 set on the paragraph itself."""
    from docx.oxml.ns import qn

    name = (paragraph.style.name if paragraph.style is not None else "").lower()
    properties = paragraph._p.pPr
    style_id = properties.style if properties is not None else None
    outline = properties.find(qn("w:outlineLvl")) if properties is not None else None
    level = outline.get(qn("w:val")) if outline is not None else None
    return (
        name.startswith(_HEADING_STYLES)
        or (style_id or "").lower().startswith(_HEADING_STYLES)
        or (level is not None and level.isdigit() and int(level) < 9)
    )
