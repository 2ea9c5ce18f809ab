"""Saved web pages to their main text with trafilatura (Apache-2.0).

trafilatura's main-content detection drops navigation, cookie banners, scripts, comments and
footers; its XML output keeps headings (`<head>`), paragraphs, lists and tables apart, so headings
become sections. Title: the page's <title> (site suffix after | or – removed), else its first <h1>.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from index.formats import Extracted, FormatError, from_blocks

_SITE_SUFFIX_RE = re.compile(r"\s+[|–—-]\s+[^|–—-]+$")


def extract_html(data: bytes) -> Extracted:
    import trafilatura
    from lxml import etree

    xml = trafilatura.extract(
        data, output_format="xml", include_tables=True, include_formatting=False, include_comments=False
    )
    if not xml:
        raise FormatError(code="unreadable_html_empty")
    root = etree.fromstring(xml.encode("utf-8"))

    def blocks() -> Iterator[tuple[bool, str]]:
        for element in root.find("main") if root.find("main") is not None else root:
            if element.tag == "head":
                yield True, "".join(element.itertext())
            elif element.tag == "list":
                yield from ((False, "".join(item.itertext())) for item in element.iter("item"))
            elif element.tag == "table":
                for row in element.iter("row"):
                    yield False, " | ".join(" ".join(c.itertext()).strip() for c in row.iter("cell"))
            else:
                yield False, " ".join(element.itertext())

    return from_blocks(blocks(), "html", _title(data))


def _title(data: bytes) -> str:
    """<title> without a trailing " | Site name", else the first <h1>."""
    from lxml import html as lxml_html

    try:
        tree = lxml_html.fromstring(data)
    except (ValueError, TypeError, SyntaxError):
        return ""
    for path in ("//title", "//h1"):
        found = tree.xpath(path)
        if found:
            text = " ".join(found[0].text_content().split())
            if text:
                return _SITE_SUFFIX_RE.sub("", text) if path == "//title" else text
    return ""
