"""Arabic text handling for matching: normalisation, tokenisation, light stemming, sentence spans.

Everything the index's keys depend on lives here, so ingestion, retrieval, answer extraction and
evaluation agree on what "the same word" means, and a change here is a change of
`NORMALIZATION_VERSION` (indexes rebuild). Display always uses the original text; these functions
only produce keys and spans. What only query time reads (question kinds, words that point back to an
earlier turn, the edges of a quoted answer) is rag/wording.py; the repair of text from PDF and OCR
layers is index/formats/repair.py: changing either never forces a re-index.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Bumped whenever the output of `normalize` or `terms` changes, so stale indexes are detected.
NORMALIZATION_VERSION = 1

_DIACRITICS = "\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06dc\u06df-\u06e8\u06ea-\u06ed"
_INVISIBLE = "\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
_STRIP_RE = re.compile(f"[{_DIACRITICS}{_INVISIBLE}\u0640]")
_LETTER_MAP = str.maketrans(
    {
        "أ": "ا",
        "إ": "ا",
        "آ": "ا",
        "ٱ": "ا",
        "ٲ": "ا",
        "ٳ": "ا",
        "ؤ": "و",
        "ئ": "ي",
        "ى": "ي",
        "ی": "ي",
        "ې": "ي",
        "ة": "ه",
        "ۀ": "ه",
        "ک": "ك",
        "ڪ": "ك",
        **{chr(0x0660 + i): str(i) for i in range(10)},
        **{chr(0x06F0 + i): str(i) for i in range(10)},
    }
)
# Anything that is not a letter, digit or mark separates words; Arabic punctuation included.
_NON_WORD_RE = re.compile(r"[^\w]+|_+")
ARABIC_LETTER_RE = re.compile(r"[\u0621-\u064a\u0671-\u06d3\u06fa-\u06ff]")
_LATIN_LETTER_RE = re.compile(r"[A-Za-z]")

_STOPWORDS_RAW = """
من في على الى إلى عن ما ماذا متى كم اين أين كيف لماذا لما هل هو هي هم هن انا أنا نحن انت أنت
الذي التي الذين اللذين اللتين اللواتي ذلك تلك هذا هذه هؤلاء هناك هنا مع او أو ثم قد لقد كان كانت
يكون تكون كانوا ان إن أن لا لم لن ليس بين حتى عند عندما منذ مثل كل بعض غير اي أي ايضا أيضا و ف ب ل
فيه فيها منه منها عليه عليها اليه إليه به بها له لها لهم وقد وكان وهو وهي وفي ومن الا إلا اذا إذا
شو ليش ايش إيش وين فين مين امتى إمتى قديش كام ازاي إزاي اللي هاد هيدا
the a an of in on at to for from by with and or is are was were be been what which who whom whose
when where why how did does do many much that this these those it its as into about than
"""
_CLITIC_PREFIXES = ("وبال", "وكال", "فبال", "وال", "بال", "كال", "فال", "ولل", "ال", "لل")
_SUFFIXES = (
    "هما",
    "كما",
    "تين",
    "تان",
    "ات",
    "ان",
    "ين",
    "ون",
    "وا",
    "يه",
    "يا",
    "ها",
    "هم",
    "هن",
    "كم",
    "نا",
    "ه",
    "ي",
)
# A dot between two ASCII letters or digits is inside a word (3.5, evil.example, report.pdf): a
# source sentence was cut at "evil.example" (issue 29).
_SENTENCE_END_RE = re.compile(r"(?:\.(?!(?<=[A-Za-z0-9]\.)[A-Za-z0-9])|[!?؟؛;])[\"'»”)\]]*|\n")
_CLAUSE_END_RE = re.compile(r"[،,:](?!\d)")


def normalize(text: str) -> str:
    """Fold the spelling variants Arabic writers use interchangeably into one matching key.

    Diacritics, tatweel and invisible/bidi controls vanish; alef/hamza forms, alef maqsura and taa
    marbuta fold to one letter; Arabic and Persian digits become ASCII; punctuation becomes space;
    Latin is case-folded. Idempotent: normalize(normalize(x)) == normalize(x).
    """
    text = unicodedata.normalize("NFKC", text)
    text = _STRIP_RE.sub("", text).translate(_LETTER_MAP).casefold()
    text = _NON_WORD_RE.sub(" ", text)
    # A second pass catches marks that NFKC or case folding exposed, and characters that only
    # compose once something between them was removed.
    return " ".join(_STRIP_RE.sub("", unicodedata.normalize("NFKC", text)).split())


def tokenize(text: str) -> list[str]:
    """Normalised word tokens, in order."""
    return normalize(text).split()


STOPWORDS: frozenset[str] = frozenset(tokenize(_STOPWORDS_RAW))


@lru_cache(maxsize=200_000)
def stem(token: str) -> str:
    """Light stemming (Larkey-style): strip one clitic prefix and one suffix, keep >= 2 letters.

    Light stemming beats root extraction for retrieval: it merges الكتاب/كتاب/بالكتاب without
    collapsing unrelated words that share a root.
    """
    if not ARABIC_LETTER_RE.match(token):
        return token
    for prefix in _CLITIC_PREFIXES:
        if token.startswith(prefix) and len(token) - len(prefix) >= 2:
            token = token[len(prefix) :]
            break
    else:
        if token[0] in "وف" and len(token) > 3:
            token = token[1:]
    for suffix in _SUFFIXES:
        if token.endswith(suffix) and len(token) - len(suffix) >= 3:
            return token[: -len(suffix)]
    return token


def terms(text: str) -> list[str]:
    """Stemmed content words: the matching unit for BM25 and answer extraction."""
    return [stem(t) for t in tokenize(text) if t not in STOPWORDS]


_LONG_VOWELS = str.maketrans("", "", "اويىة")


def skeleton(term: str) -> str:
    """A stem's consonants, without long vowels and a verbal-noun م prefix: the verb and the noun
    of one action meet (تأسس/تأسيسه -> تسس, انعقد/انعقاد -> نعقد, شارك/المشاركة -> شرك), which
    light stemming keeps apart on purpose (it would also merge unrelated words sharing a root).
    Empty for short or non-Arabic terms, where the consonants say too little."""
    if not ARABIC_LETTER_RE.match(term):
        return ""
    bare = term.translate(_LONG_VOWELS)
    if len(bare) > 3 and bare[0] == "م":
        bare = bare[1:]
    return bare if len(bare) >= 3 else ""


def has_letters(text: str) -> bool:
    """Is there a letter of any script once diacritics and tatweel are gone? Numbers and marks
    alone are no question, and have no language of their own."""
    return any(ch.isalpha() for ch in normalize(text))


def language(text: str) -> str:
    """'ar' when Arabic letters dominate, else 'en'; decides the language of replies."""
    arabic = len(ARABIC_LETTER_RE.findall(text))
    latin = len(_LATIN_LETTER_RE.findall(text))
    return "ar" if arabic >= latin and arabic > 0 else "en"


def _split(text: str, boundary: re.Pattern[str], start: int, end: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    cursor = start
    for match in boundary.finditer(text, start, end):
        if match.end() > cursor and text[cursor : match.end()].strip():
            spans.append((cursor, match.end()))
            cursor = match.end()
    if cursor < end:
        if spans and not text[cursor:end].strip():
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((cursor, end))
    return spans


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Split text[start:end] into sentences; the spans tile the range exactly, in order.

    Boundaries are . ! ? ؟ ؛ ; and newlines (not a dot inside a number, a domain or a file name, as
    in 3.5 or evil.example). Tiling means no
    character is lost, so a chunk or citation span can always be mapped back to the source.
    """
    return _split(text, _SENTENCE_END_RE, start, len(text) if end is None else end)


def clause_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Split one long sentence at Arabic/Latin commas and colons; the spans tile the range."""
    return _split(text, _CLAUSE_END_RE, start, end)


def trim_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink a span so it neither starts nor ends with whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


# A word: letters, digits and marks, with a decimal or thousands separator kept inside numbers
# (3.5, 1,000, ٣٫٥), so "15 أغسطس 2023," yields the words 15 / أغسطس / 2023 without the comma.
_WORD_RE = re.compile(rf"[\w{_DIACRITICS}\u0640]+(?:[.,٫٬][0-9٠-٩]+)*")
# Punctuation that ends a phrase: an answer span never runs across it.
_PHRASE_BREAK_RE = re.compile(r"[،,:;؛.!?؟\n()\[\]{}«»\"“”]")


def word_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Offsets of the words of text[start:end], without the punctuation around them.

    The unit of answer spans: a span is a run of words, so its offsets always point at the
    source text and never start or end on a comma or quote.
    """
    return [m.span() for m in _WORD_RE.finditer(text, start, len(text) if end is None else end)]


def phrase_break(text: str, start: int, end: int) -> bool:
    """Does the gap text[start:end] between two words hold phrase-ending punctuation?"""
    return bool(_PHRASE_BREAK_RE.search(text, start, end))


def locate(text: str, phrase: str) -> tuple[int, int] | None:
    """Where `phrase` occurs in `text`, matching word by word after normalisation; None if absent.

    Lets a phrase written with other spelling variants or diacritics ("مؤتمر موسكو" vs "مؤتمرُ
    موسكو") be checked against, and highlighted in, the original text.
    """
    wanted = tokenize(phrase)
    if not wanted:
        return None
    spans = word_spans(text)
    keys = [normalize(text[s:e]) for s, e in spans]
    # A word of `text` may normalise to several tokens (a mark-separated compound): compare joined keys.
    for i in range(len(keys)):
        joined: list[str] = []
        for j in range(i, len(keys)):
            joined.extend(keys[j].split())
            if joined != wanted[: len(joined)]:
                break
            if len(joined) == len(wanted):
                return spans[i][0], spans[j][1]
    return None


def plain(text: str) -> str:
    """The text as written, minus what never tells words apart: NFKC, no diacritics, tatweel or
    invisible marks (the spelling kept, unlike `normalize`: ة and ه stay different letters)."""
    return _STRIP_RE.sub("", unicodedata.normalize("NFKC", text))
