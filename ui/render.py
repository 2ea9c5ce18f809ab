"""Answers to chat HTML: per-message text direction, the short answer in bold, cited passages with
the answer's sentences highlighted and the short answer's span marked inside them.

Every piece of document or user text goes through `escape_text`, which turns HTML *and* Markdown
syntax into inert character references: a `<script>` or `[link](url)` inside a document is shown
as the characters it is, never as live markup.
"""

from __future__ import annotations

import string
from pathlib import PurePosixPath
from urllib.parse import urlencode

from index.arabic import language
from index.formats import describe_location
from index.formats.marks import PAGE_SUFFIXES
from index.load import safe_name
from rag.answer import MARKER_RE, Answer, Citation, cited_pages

# Every ASCII punctuation mark is made a numeric character reference, so neither the HTML
# sanitiser nor the Markdown renderer can find a tag, a link, emphasis or an autolink in it.
_ESCAPES = {ord(c): f"&#{ord(c)};" for c in string.punctuation}


def escape_text(text: str) -> str:
    """Inert HTML for arbitrary text; newlines become <br> so paragraphs stay visible."""
    return text.translate(_ESCAPES).replace("\n", "<br>")


def direction(text: str) -> str:
    return "rtl" if language(text) == "ar" else "ltr"


def user_message(question: str) -> str:
    return f'<div dir="{direction(question)}" class="msg">{escape_text(question)}</div>'


def notice_message(text: str, kind: str = "error") -> str:
    """A friendly message in the chat (refusals, errors): never a traceback."""
    return f'<div dir="{direction(text)}" class="notice notice-{kind}">{escape_text(text)}</div>'


def stream_message(question: str, partial: str) -> str:
    """The LLM's answer while it streams in (markers are checked once it is complete)."""
    return f'<div dir="{direction(question)}" class="answer streaming">{escape_text(partial)}▌</div>'


# The short answer's tooltip: what chose it (Answer.short_answer_by), so a user comparing the
# reader with the default can tell which made the answer in front of them.
CHOSEN_BY = {
    "reader": ("اختارها القارئ المدرَّب", "Chosen by the fine-tuned reader"),
    "span_ranker": ("اختارها مرتِّب المقاطع", "Chosen by the span ranker"),
    "sentence": ("الجملة الداعمة كاملة: لم يوجد مقطع أقصر", "The whole evidence sentence: no shorter span was found"),
    "llm": (
        "أول جملة في جواب النموذج اللغوي، وُجدت حرفيًّا في مصدرها",
        "The language model's first sentence, found verbatim in its source",
    ),
}


def _answer_text(answer: Answer) -> str:
    """The short answer in bold, then the answer with its [n] markers turned into small badges
    (after escaping the text). When the answer text does not begin with the short answer (an LLM
    answer whose first sentence was found in a passage in other spelling), both are shown."""
    text, lead = answer.answer, ""
    if answer.short_answer:
        ar, en = CHOSEN_BY.get(answer.short_answer_by, ("", ""))
        chosen = ar if direction(answer.question) == "rtl" else en
        title = f' title="{chosen}"' if chosen else ""  # our own labels: nothing to escape
        lead = f'<b class="short-answer"{title}>{escape_text(answer.short_answer)}</b>'
        if text.startswith(answer.short_answer):
            text = text[len(answer.short_answer) :]
        else:
            lead += "<br>"
    pieces = [lead]
    cursor = 0
    for match in MARKER_RE.finditer(text):
        pieces.append(escape_text(text[cursor : match.start()]))
        n = int(match.group(1))
        pieces.append(f'<sup class="cite cite-{n}" title="{n}">[{n}]</sup>')
        cursor = match.end()
    pieces.append(escape_text(text[cursor:]))
    return "".join(pieces)


def _highlighted(citation: Citation, short: tuple[int, int] | None) -> str:
    """The passage with the answer's pieces marked; the short answer's span gets its own class."""
    text, cursor, out = citation.text, 0, []
    for start, end in sorted(citation.highlights):
        if start < cursor:  # overlapping highlights: the earlier one already covers this text
            continue
        piece = escape_text(text[start:end])
        out.append(escape_text(text[cursor:start]))
        out.append(
            f'<mark class="short-answer"><b>{piece}</b></mark>' if (start, end) == short else f"<mark>{piece}</mark>"
        )
        cursor = end
    out.append(escape_text(text[cursor:]))
    return "".join(out)


def _passage(
    citation: Citation, show_scores: bool, open_: bool, arabic: bool, short: tuple[int, int] | None = None
) -> str:
    """A cited passage, folded under its header; the header speaks the message's language (`arabic`),
    whatever the passage's own: "الفقرة 1" on an English page was a new user's complaint."""
    score = f" · {'الدرجة' if arabic else 'score'} {citation.score:.3f}" if show_scores else ""
    page, page_end = cited_pages(citation)
    located = describe_location(
        page, page_end, citation.section, citation.ocr, arabic=arabic, paragraph=citation.paragraph
    )
    # The section name comes from the document: escaped like every other piece of document text.
    where = escape_text(located)
    return (
        f'<details class="source src-{citation.n}"{" open" if open_ else ""}>'
        f'<summary dir="auto"><b>[{citation.n}]</b> <bdi>{escape_text(safe_name(citation.title))}</bdi> '
        f'<span class="where">— <bdi>{escape_text(safe_name(citation.source))}</bdi>{" · " if where else ""}<bdi>{where}{score}</bdi></span></summary>'
        f'<div dir="{direction(citation.text)}" class="passage">{_highlighted(citation, short)}</div>'
        f"{_page_link(citation, short, arabic)}</details>"
    )


def _page_link(citation: Citation, short: tuple[int, int] | None, arabic: bool) -> str:
    """For a PDF or a page image: a link to the page itself with the evidence sentence shaded and
    the short answer outlined (the API's /api/page, which checks the document is in the index)."""
    if PurePosixPath(citation.source).suffix.lower() not in PAGE_SUFFIXES:
        return ""
    # The evidence sentence: the highlighted run holding the short answer (the sentence is
    # highlighted in pieces around it), else the first run.
    runs: list[tuple[int, int]] = []
    for start, end in sorted(citation.highlights):
        if runs and not citation.text[runs[-1][1] : start].strip():
            runs[-1] = (runs[-1][0], max(runs[-1][1], end))
        else:
            runs.append((start, end))
    holding = [r for r in runs if short and r[0] <= short[0] and short[1] <= r[1]]
    sentence = (holding or runs or [(0, min(len(citation.text), 300))])[0]
    query = {
        "document": citation.source,
        "page": citation.page or 1,
        "page_end": citation.page_end or citation.page or 1,
        "sentence": citation.text[sentence[0] : sentence[1]],
        "answer": citation.text[short[0] : short[1]] if short else "",
    }
    label = "اعرضها في الصفحة" if arabic else "Show on the page"
    # urlencode leaves no character that HTML treats specially but "&", escaped here.
    href = "api/page?" + urlencode(query).replace("&", "&amp;")
    return f'<a class="page-link" href="{href}" target="_blank" rel="noopener">{label}</a>'


def answer_message(answer: Answer, show_scores: bool = False) -> str:
    """One bot message: the answer (or abstention) and, under it, the cited or related passages."""
    dir_ = direction(answer.question)
    parts = []
    if answer.notice:
        parts.append(f'<div class="notice notice-warn" dir="auto">{escape_text(answer.notice)}</div>')
    if answer.abstained:
        parts.append(f'<div dir="{dir_}" class="answer abstained">{escape_text(answer.answer)}</div>')
        if answer.related:
            label = "مقاطع ذات صلة" if dir_ == "rtl" else "Related passages"
            parts.append(f'<div class="sources-label" dir="{dir_}">{label}</div>')
            parts.extend(_passage(c, show_scores, False, dir_ == "rtl") for c in answer.related[:3])
        return "".join(parts)
    parts.append(f'<div dir="{dir_}" class="answer">{_answer_text(answer)}</div>')
    if not answer.grounded:
        warn = "تنبيه: لا يستند هذا الجواب إلى مصدر صالح." if dir_ == "rtl" else "Warning: no valid citation."
        parts.append(f'<div class="notice notice-warn" dir="{dir_}">{warn}</div>')
    label = "المصادر" if dir_ == "rtl" else "Sources"
    parts.append(f'<div class="sources-label" dir="{dir_}">{label}</div>')
    # The first source is open; the others are one click away, so the answer itself stays in view.
    where = answer.short_answer_citation
    parts.extend(
        _passage(
            c,
            show_scores,
            i == 0,
            dir_ == "rtl",
            short=(where["start"], where["end"]) if where.get("n") == c.n else None,
        )
        for i, c in enumerate(answer.citations)
    )
    copy = "نسخ" if dir_ == "rtl" else "Copy"
    parts.append(f'<button type="button" class="copy-answer" title="{copy}">{copy}</button>')
    return "".join(parts)


def upload_results(lines: list[tuple[str, str, str]]) -> str:
    """The upload's per-file list, one (state, file name, what happened) line per file. The name is
    isolated (<bdi>), so an Arabic name in an English line, or the reverse, keeps the line's order; the
    list is a live region, so a screen reader announces each file's fate as the list changes."""
    items = "".join(
        f'<li class="upload-file outcome-{state}"><bdi>{escape_text(name)}</bdi>{": " if name else ""}'
        f"{escape_text(text)}</li>"
        for state, name, text in lines
    )
    return f'<ul class="upload-results" aria-live="polite">{items}</ul>' if items else ""
