"""Arabic text handling: normalisation for matching, tokenisation, light stemming, sentence spans.

Everything that needs to know how Arabic is written lives here, so ingestion, retrieval, answer
extraction and evaluation agree on what "the same word" means. Display always uses the original
text; these functions only produce keys for matching.
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
_ARABIC_LETTER_RE = re.compile(r"[\u0621-\u064a\u0671-\u06d3\u06fa-\u06ff]")
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
_SENTENCE_END_RE = re.compile(r"(?:\.(?!(?<=\d\.)\d)|[!?؟؛;])[\"'»”)\]]*|\n")
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
    if not _ARABIC_LETTER_RE.match(token):
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
    if not _ARABIC_LETTER_RE.match(term):
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
    arabic = len(_ARABIC_LETTER_RE.findall(text))
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

    Boundaries are . ! ? ؟ ؛ ; and newlines (not a dot between digits, as in 3.5). Tiling means no
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


# Punctuation that ends or separates clauses: never the first or last character of a quoted answer.
_CLAUSE_PUNCTUATION = frozenset("،,.;:!?؟؛…")
# Quotes and brackets: kept at an answer's edge only together with their partner inside it.
_OPENERS = {"“": "”", "«": "»", "(": ")", "[": "]", '"': '"', "‘": "’"}
_CLOSERS = {close: open_ for open_, close in _OPENERS.items()}


def trim_answer(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink an answer span to what one would quote: no whitespace or clause punctuation at its
    edges (a reader's token may take the comma after "2023،"), and no quote or bracket whose
    partner lies outside it ("“عزيز نصير زاده" without its closing quote). A closing mark first or
    an opening one last pairs with nothing inside, unless writers use it on both sides: the seeds
    quote a title as ”…”, so a span "”…”" loses both marks, one at a time."""
    while True:
        start, end = trim_span(text, start, end)
        if start == end:
            return start, end
        first, last = text[start], text[end - 1]
        if (
            first in _CLAUSE_PUNCTUATION
            or (first in _OPENERS and _OPENERS[first] not in text[start + 1 : end])
            or (first in _CLOSERS and first not in _OPENERS and last != first)
        ):
            start += 1
        elif (
            last in _CLAUSE_PUNCTUATION
            or (last in _CLOSERS and _CLOSERS[last] not in text[start : end - 1])
            or (last in _OPENERS and last not in _CLOSERS)
        ):
            end -= 1
        else:
            return start, end


# --- conversation: words that point back to an earlier turn -----------------------------------------

# Attached object/possessive pronouns (ـه ـها ـهم ـهما ـهن), longest first.
_PRONOUN_SUFFIXES = ("هما", "هم", "هن", "ها", "ه")
# Prepositions and particles that carry an attached pronoun as a whole word: فيه، منها، عليهم، له...
_PRONOUN_HOSTS = ("في", "من", "عن", "علي", "الي", "ل", "ب", "مع", "عند", "لدي", "حول", "بين")
_HOSTED_PRONOUNS = frozenset(host + suffix for host in _PRONOUN_HOSTS for suffix in _PRONOUN_SUFFIXES)
_DEMONSTRATIVES = frozenset(tokenize("هذا هذه ذلك تلك ذاك هؤلاء أولئك هذان هاتان هناك"))
_PERSONAL_PRONOUNS = frozenset(tokenize("هو هي هم هما هن"))
_QUESTION_WORDS = frozenset(
    tokenize("من ما ماذا متى كم أين كيف لماذا هل أي ماهو ماهي منو مين شو شنو ايش وين قديش امتى ليش")
    + "what which who whom whose when where why how".split()
)
# A pronoun after a relative pronoun usually points back to the relative's own noun, inside the
# sentence: "الجائزة التي حصل عليها" (the prize that he won it).
_RELATIVE_PRONOUNS = frozenset(tokenize("الذي التي الذين اللذان اللتان اللذين اللتين اللواتي اللاتي اللي"))
# Words of their own with no content: a question counting them would look more specific than it is.
ENGLISH_PRONOUNS = frozenset(
    "it its they them their theirs he him his she her hers there this that these those".split()
)
_ENGLISH_LEADS = frozenset({"and", "so", "also", "then", "but"})
# An open-class word shorter than this (after a conjunction is removed) is not read as word + pronoun:
# short words ending in ه/هم are mostly whole words (أهم، فهم، وجه).
_MIN_CLITIC_HOST_LETTERS = 4
_RAW_WORD_RE = re.compile(r"\w+")


def _conjunction_free(word: str) -> str:
    """A normalised word without a leading و/ف conjunction when what remains is itself a word we
    know how to read (a function word or a pronoun host), so وزير keeps its و but ومن loses it."""
    if len(word) > 2 and word[0] in "وف":
        rest = word[1:]
        if rest in STOPWORDS or rest in _HOSTED_PRONOUNS or rest in _DEMONSTRATIVES:
            return rest
    return word


def _bears_pronoun(raw: str) -> bool:
    """Does this written word end in an attached pronoun (حضره، زارها، كلمته، فيه)?

    Read on the raw spelling: ة (taa marbuta) is a letter of the noun, not the pronoun ه, and
    normalisation would fold the two together. A word with the article ال cannot carry a
    possessive pronoun, which rules out الله and الاتجاه.
    """
    if raw.endswith("ة") or not _ARABIC_LETTER_RE.match(raw):
        return False
    word = _conjunction_free(normalize(raw))
    if word in _HOSTED_PRONOUNS:
        return True
    if word.startswith(("ال", "لل")) or len(word) < _MIN_CLITIC_HOST_LETTERS or word in STOPWORDS:
        return False
    return word.endswith(_PRONOUN_SUFFIXES)


def referring_words(text: str) -> list[str]:
    """Words that point outside the sentence: attached pronouns (فيه، حضرها، كلمته), demonstratives
    (ذلك العام، هذه التحالفات), a personal pronoun that is not the copula after a question word
    (من هو ... is "who is ..."), and English it/they/he/she/that/there....

    The first attached pronoun after a relative pronoun is the relative clause's own ("التي حصل
    عليها") and is skipped. A question full of these may still be self-contained ("كم دولة جاء منها
    المندوبون"): the caller weighs them against how much the question names on its own.
    """
    found: list[str] = []
    previous = ""
    in_relative_clause = False
    for raw in _RAW_WORD_RE.findall(_STRIP_RE.sub("", unicodedata.normalize("NFKC", text))):
        key = _conjunction_free(normalize(raw))
        attached = _bears_pronoun(raw)
        if attached and in_relative_clause:
            in_relative_clause = False
        elif (
            attached
            or key in ENGLISH_PRONOUNS
            or key in _DEMONSTRATIVES
            or (key in _PERSONAL_PRONOUNS and previous not in _QUESTION_WORDS)
        ):
            found.append(raw)
        in_relative_clause = in_relative_clause or key in _RELATIVE_PRONOUNS
        previous = key
    return found


def continues_conversation(text: str) -> bool:
    """Does the question open like a reply to an earlier turn: و/ف glued to its first function word
    (ومن، وكم، وفي، فما) or English "And ..." / "So ..." / "What about ..."?"""
    words = normalize(text).split()
    if not words:
        return False
    first = words[0]
    if first in _ENGLISH_LEADS or words[:2] in (["what", "about"], ["how", "about"]):
        return True
    return _conjunction_free(first) != first


def content_words(text: str) -> list[str]:
    """The words of a question that name its topic, as written (diacritics dropped): no question
    words, function words or pronouns. These are what a follow-up question inherits."""
    words = _RAW_WORD_RE.findall(_STRIP_RE.sub("", unicodedata.normalize("NFKC", text)))
    return [w for w in words if (key := normalize(w)) and not _is_function_word(key)]


def _is_function_word(key: str) -> bool:
    """A stopword, question word, pronoun or demonstrative, also behind a one-letter particle
    (بماذا، وفي، لمن)."""
    keys = (key, key[1:]) if len(key) > 2 and key[0] in "وفبلك" else (key,)
    closed = (STOPWORDS, _QUESTION_WORDS, ENGLISH_PRONOUNS, _DEMONSTRATIVES)
    return any(k in words for k in keys for words in closed)


# --- Text taken out of PDFs, OCR and office files -------------------------------------------------
# Presentation forms (U+FB50–U+FDFF, U+FE70–U+FEFC) are glyph shapes PDF text layers often carry
# instead of letters; NFKC maps them back to letters. NFKC is applied to these blocks only: on the
# whole text it would also rewrite superscripts, full-width forms and the like that the author typed.
_PRESENTATION_RE = re.compile("[\ufb50-\ufdff\ufe70-\ufefc]+")
# Bidi embedding/override/isolate marks, LRM/RLM/ALM, BOM: layout instructions, never content.
_BIDI_RE = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_MARKS = "\u064b-\u065f\u0670"
# A mark a text layer put after a space ("يُ عقد" → the mark belongs to the letter before it).
_MARK_AFTER_SPACE_RE = re.compile(f"(?<=[\u0621-\u064a]) +([{_MARKS}]+)")
# "فضًل ا": the lam-alef ligature split in two, its mark moved before the lam.
# "ُي عقد": a mark placed before the letter it sits on, and the word cut after that letter.
_MARK_BEFORE_LETTER_RE = re.compile(f"(?<![\u0621-\u064a{_MARKS}])([{_MARKS}]+)([\u0621-\u064a]) ?")
_SPLIT_LAM_ALEF_RE = re.compile(f"([{_MARKS}]+)ل ا(?=[\\s{_MARKS}]|$)")
_ARABIC_RUN_RE = re.compile("[\u0600-\u06ff\ufb50-\ufdff\ufe70-\ufefc]")
# Characters that keep left-to-right order inside a right-to-left line: Latin letters and digits,
# plus the separators that join them (3.5, 2018-10, 1,000) when they sit between two of them.
_LTR_RUN_RE = re.compile(
    r"[A-Za-z0-9\u0660-\u0669\u06f0-\u06f9]+(?:[ .,:/%\-]+[A-Za-z0-9\u0660-\u0669\u06f0-\u06f9]+)*"
)
_MIRROR = str.maketrans("()[]{}<>«»", ")(][}{><»«")


def repair_extracted(text: str) -> str:
    """Make text pulled from a PDF/OCR layer read like the typed original.

    Presentation-form glyphs become letters (NFKC on those blocks only), bidi controls go, and the
    two breakages PDF text layers produce most in Arabic are mended: a diacritic cut off from its
    letter by a space, and a lam-alef ligature split into "ًل ا". Applied at load time, so chunk
    spans and citations point into this repaired text.
    """
    text = _PRESENTATION_RE.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)
    text = _BIDI_RE.sub("", text)
    text = _SPLIT_LAM_ALEF_RE.sub(lambda m: "ل" + m.group(1) + "ا", text)
    text = _MARK_BEFORE_LETTER_RE.sub(r"\2\1", text)
    return _MARK_AFTER_SPACE_RE.sub(r"\1", text)


def visual_to_logical(line: str) -> str:
    """One line stored in visual (left-to-right glyph) order back to logical order.

    Lines with Arabic are reversed, then each embedded left-to-right run (numbers, Latin words) is
    turned back the right way and mirrored brackets are swapped: what the Unicode bidi algorithm did
    for display, undone for the simple case of an RTL paragraph with LTR islands.
    """
    if not _ARABIC_RUN_RE.search(line):
        return line
    reversed_line = line[::-1].translate(_MIRROR)
    return _LTR_RUN_RE.sub(lambda m: m.group()[::-1], reversed_line)


def letter_share(text: str) -> float:
    """Share of non-space characters that are Arabic or Latin letters (or digits).

    A text layer made of private-use glyph codes or (cid:123) escapes scores low; real prose in
    either script scores above 0.7, so loaders use this to decide that a page needs OCR.
    """
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return 0.0
    good = sum(1 for c in chars if _ARABIC_LETTER_RE.match(c) or (c.isascii() and c.isalnum()) or c.isdigit())
    return good / len(chars)


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


_QUESTION_TYPES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    # A follow-up joins the conjunction و or ف to its question word ("ومتى تأسس؟", "فكيف رد؟").
    (kind, re.compile(rf"(^| )[وف]?({words})( |$)"))
    for kind, words in (
        # Patterns are tried on normalised text; the earliest match wins and, at the same place,
        # the earlier line ("اي عام" is a when before a which, "ما عدد" a how-many before a what).
        ("when", "متي|امتي|امته|اي عام|اي سنه|اي تاريخ|اي يوم|اي شهر|what year|which year|when"),
        ("how_many", "كم|قديش|كام|ما عدد|ما هو عدد|how many|how much|what number"),
        ("why", "لماذا|ليش|ليه|لم|علام|why"),
        ("how", "كيف|ازاي|كيفيه|شلون|how"),
        ("where", "اين|وين|فين|الي اين|من اين|where"),
        ("who", "من هو|من هي|من هم|مين|منو|من|who|whom|whose"),
        ("which", "اي|ايه|which"),
        ("what", "ما|ماذا|ماهو|ماهي|شو|ايش|شنو|اش|وش|what"),
        ("yes_no", "هل|is|are|was|were|did|does|do|can|has|have"),
    )
)
QUESTION_TYPES: tuple[str, ...] = (*(kind for kind, _ in _QUESTION_TYPES), "other")


def question_type(question: str) -> str:
    """The kind of answer a question asks for, from its question word (Arabic, dialects, English).

    Only the first few words are looked at (a question word later in the sentence is usually a
    preposition, "من" = from, or part of a clause), then the last two, where dialects put it
    ("المؤتمر ده اتعمل إمتى؟"). Returns one of QUESTION_TYPES.
    """
    words = tokenize(question)
    for head in (" ".join(words[:5]), " ".join(words[-2:])):
        best: tuple[int, str] = (len(head) + 1, "other")
        for kind, pattern in _QUESTION_TYPES:
            match = pattern.search(head)
            if match and match.start(2) < best[0]:
                best = (match.start(2), kind)
        if best[1] != "other":
            return best[1]
    return "other"
