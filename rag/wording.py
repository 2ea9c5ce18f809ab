"""Arabic (and English) wording that only query time reads: the kind of answer a question asks
for, the words of a follow-up that point back to an earlier turn, and the edges of a quoted answer.

Kept apart from index/arabic.py, whose output the index's keys depend on, so that tuning how a
question or an answer is read never forces a re-index.
"""

from __future__ import annotations

import re

from index.arabic import ARABIC_LETTER_RE, STOPWORDS, normalize, plain, tokenize, trim_span

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
_CONTRACTED_QUESTION_WORDS = frozenset(tokenize("إلام علام فيم حتام"))
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


def _after_conjunction(word: str) -> str:
    """What follows a leading و/ف in a normalised word ("" when it has none or is too short to)."""
    return word[1:] if len(word) > 2 and word[0] in "وف" else ""


def _conjunction_free(word: str) -> str:
    """A normalised word without a leading و/ف conjunction when what remains is itself a word we
    know how to read (a function word or a pronoun host), so وزير keeps its و but ومن loses it."""
    rest = _after_conjunction(word)
    if rest in STOPWORDS or rest in _HOSTED_PRONOUNS or rest in _DEMONSTRATIVES:
        return rest
    return word


def _bears_pronoun(raw: str) -> bool:
    """Does this written word end in an attached pronoun (حضره، زارها، كلمته، فيه)?

    Read on the raw spelling: ة (taa marbuta) is a letter of the noun, not the pronoun ه, and
    normalisation would fold the two together. A word with the article ال cannot carry a
    possessive pronoun, which rules out الله and الاتجاه.
    """
    if raw.endswith("ة") or not ARABIC_LETTER_RE.match(raw):
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
    for raw in _RAW_WORD_RE.findall(plain(text)):
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
    # و/ف glued to a word we read (ومن، فما), to a preposition glued to the question word (وبماذا،
    # وبكم، ولمن) or to a question word contracted with one (وإلامَ = و + إلى + ما، وعلامَ، وفيمَ).
    rest = _after_conjunction(first)
    return bool(rest) and (
        _conjunction_free(first) == rest
        or rest in _CONTRACTED_QUESTION_WORDS
        or (len(rest) > 2 and rest[0] in "بل" and rest[1:] in _QUESTION_WORDS)
    )


def content_words(text: str) -> list[str]:
    """The words of a question that name its topic, as written (diacritics dropped): no question
    words, function words or pronouns. These are what a follow-up question inherits."""
    words = _RAW_WORD_RE.findall(plain(text))
    return [w for w in words if (key := normalize(w)) and not _is_function_word(key)]


def _is_function_word(key: str) -> bool:
    """A stopword, question word, pronoun or demonstrative, also behind a one-letter particle
    (بماذا، وفي، لمن)."""
    keys = (key, key[1:]) if len(key) > 2 and key[0] in "وفبلك" else (key,)
    closed = (STOPWORDS, _QUESTION_WORDS, ENGLISH_PRONOUNS, _DEMONSTRATIVES)
    return any(k in words for k in keys for words in closed)


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
