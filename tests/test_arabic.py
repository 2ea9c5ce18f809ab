"""index.arabic (normalisation, tokens, stems, language, sentence/clause spans) and rag.wording
(question kinds, follow-up words, answer edges); plus property tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.documents import Document

from index.arabic import (
    STOPWORDS,
    clause_spans,
    has_letters,
    language,
    locate,
    normalize,
    phrase_break,
    sentence_spans,
    skeleton,
    stem,
    terms,
    tokenize,
    trim_span,
    word_spans,
)
from index.chunk import ChunkSettings, split_document
from rag.wording import content_words, continues_conversation, question_type, referring_words, trim_answer
from tests.helpers import uncovered_non_space

PROPERTY = settings(max_examples=200, deadline=None)


def pieces(text: str, spans: list[tuple[int, int]]) -> list[str]:
    return [text[s:e] for s, e in spans]


def assert_tiles(text: str, spans: list[tuple[int, int]], start: int = 0, end: int | None = None) -> None:
    end = len(text) if end is None else end
    cursor = start
    for s, e in spans:
        assert s == cursor, (spans, text)
        assert e > s, (spans, text)
        cursor = e
    assert cursor == end or (not spans and start == end)
    assert "".join(pieces(text, spans)) == text[start:end]


# --- normalize -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("مُتَعَدِّد", "متعدد"),  # fatha, damma, shadda, kasra
        ("عالمٌ مُتعدِّدُ الأقطابِ", "عالم متعدد الاقطاب"),
        ("قُرْآنٌ", "قران"),  # sukun, tanween, alef madda
        ("العـــالم", "العالم"),  # tatweel
        ("أحمد إبراهيم آمال", "احمد ابراهيم امال"),
        ("ٱلرحمن", "الرحمن"),  # alef wasla
        ("مستشفى على", "مستشفي علي"),  # alef maqsura
        ("مدرسة القاهرة", "مدرسه القاهره"),  # taa marbuta
        ("مؤتمر شؤون", "موتمر شوون"),
        ("مسائل", "مسايل"),
        ("عام ٢٠٢٣", "عام 2023"),  # Arabic-Indic digits
        ("عام ۲۰۲۳", "عام 2023"),  # Persian digits
        ("مرحبا، كيف الحال؟ بخير؛ شكرا.", "مرحبا كيف الحال بخير شكرا"),
        ("«السلام» - (عليكم)!", "السلام عليكم"),
        ("الأمن\u200bالدولي", "الامنالدولي"),  # zero-width space vanishes (does not split)
        ("\u200fموسكو\u200e \u202bالدولي\u202c \u2067روسيا\u2069", "موسكو الدولي روسيا"),  # bidi controls
        ("\ufeffنص", "نص"),  # BOM
        ("NATO Summit", "nato summit"),  # Latin is case-folded
        ("  مسافات   كثيرة \n\t هنا ", "مسافات كثيره هنا"),
        ("\ufefb", "لا"),  # lam-alef presentation form (NFKC)
        ("", ""),
    ],
)
def test_normalize_examples(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_normalize_folds_spelling_variants_to_one_key() -> None:
    variants = ["إِلَى", "إلى", "الى", "الي", "إلـــى", "إل\u200cى"]
    assert {normalize(v) for v in variants} == {"الي"}
    assert normalize("مكتبة") == normalize("مكتبه")
    assert normalize("٢٠٢٣") == normalize("۲۰۲۳") == normalize("2023")


@pytest.mark.parametrize(
    "text",
    ["مُتَعَدِّد العـــالم أإآ ى ة", "عام ٢٠٢٣، ۲۰۲۳؛ ماذا؟", "ٱلْحَمْدُ لِلَّهِ", "\u200fمرحبا\u200f", "Straße ÉTÉ", ""],
)
def test_normalize_is_idempotent_on_examples(text: str) -> None:
    once = normalize(text)
    assert normalize(once) == once


def test_normalize_idempotent_when_removed_char_joins_hangul_jamo() -> None:
    # A zero-width space between a leading consonant and a vowel jamo is removed after NFKC ran, so
    # the output "가" still composes to "가" when normalised again: the docstring promises idempotence.
    once = normalize("\u1100\u200b\u1161")
    assert normalize(once) == once


# --- tokenize / stem / terms / language -------------------------------------------------------------


def test_tokenize_splits_on_space_and_arabic_punctuation() -> None:
    assert tokenize("انعقد مؤتمرُ موسكو، في ١٥ أغسطس؛ أليس كذلك؟") == [
        "انعقد",
        "موتمر",
        "موسكو",
        "في",
        "15",
        "اغسطس",
        "اليس",
        "كذلك",
    ]
    assert tokenize("") == []
    assert tokenize("؟؟ ، ؛ ...") == []


def test_stem_merges_clitic_forms() -> None:
    forms = ["والمؤتمر", "بالمؤتمر", "المؤتمر", "للمؤتمر", "مؤتمر", "فالمؤتمر", "وبالمؤتمر"]
    stems = {stem(t) for t in tokenize(" ".join(forms))}
    assert len(stems) == 1, stems


@pytest.mark.parametrize(
    ("word", "same_as"),
    [("الكتاب", "كتاب"), ("بالكتاب", "كتاب"), ("المؤتمرات", "مؤتمر"), ("الدول", "دول"), ("كتابها", "كتاب")],
)
def test_stem_light_forms(word: str, same_as: str) -> None:
    assert stem(normalize(word)) == stem(normalize(same_as))


def test_stem_keeps_short_words_and_latin() -> None:
    assert stem("ال") == "ال"
    assert stem("ولد") == "ولد"  # leading waw kept on a three-letter word
    assert stem("conference") == "conference"
    assert stem("2023") == "2023"
    assert len(stem(normalize("والكتب"))) >= 2


def test_terms_drops_stopwords() -> None:
    assert terms("ما هو مؤتمر موسكو للأمن الدولي؟") == [stem("موتمر"), "موسكو", stem("للامن"), stem("الدولي")]
    assert terms("من هو الذي كان في هذا") == []
    assert terms("What is the Moscow conference?") == ["moscow", "conference"]
    assert {"في", normalize("إلى"), normalize("متى"), "شو"} <= STOPWORDS


def test_terms_match_across_spelling_variants() -> None:
    assert terms("إِلَى المُؤْتَمَرِ") == terms("الى المؤتمر")
    assert terms("بالمؤتمر") == terms("والمؤتمر")


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("متى عُقد مؤتمر موسكو للأمن الدولي؟", "ar"),
        ("Which ministry organizes the Moscow Conference?", "en"),
        ("ما هو NATO؟", "ar"),
        ("Is the word مؤتمر Arabic?", "en"),
        ("2023", "en"),
        ("", "en"),
    ],
)
def test_language(text: str, lang: str) -> None:
    assert language(text) == lang


# --- sentence_spans / clause_spans ------------------------------------------------------------------

ARABIC_PARAGRAPHS = (
    "مؤتمر موسكو للأمن الدولي\n"
    "انعقد المؤتمر في أغسطس. حضره أكثر من 800 مندوب؛ وكان الحضور الصيني لافتًا.\n"
    "\n"
    "هل حضرت الدول الغربية؟ لا.\n"
    "بلغت نسبة النمو 3.5 بالمئة في العام الماضي."
)


def test_sentence_spans_split_arabic_text() -> None:
    spans = sentence_spans(ARABIC_PARAGRAPHS)
    assert_tiles(ARABIC_PARAGRAPHS, spans)
    got = [p.strip() for p in pieces(ARABIC_PARAGRAPHS, spans)]
    assert got == [
        "مؤتمر موسكو للأمن الدولي",
        "انعقد المؤتمر في أغسطس.",
        "حضره أكثر من 800 مندوب؛",
        "وكان الحضور الصيني لافتًا.",
        "هل حضرت الدول الغربية؟",
        "لا.",
        "بلغت نسبة النمو 3.5 بالمئة في العام الماضي.",
    ]


def test_sentence_spans_do_not_cut_a_domain_or_a_file_name() -> None:
    """Issue 29: a source sentence was cut at "evil.example"."""
    text = "وللتسجيل زر http://evil.example/ أو افتح report.pdf في الإصدار 2.1. ثم عد إلينا."
    got = [p.strip() for p in pieces(text, sentence_spans(text))]
    assert got == ["وللتسجيل زر http://evil.example/ أو افتح report.pdf في الإصدار 2.1.", "ثم عد إلينا."]


def test_sentence_spans_keep_decimal_and_closing_quotes() -> None:
    text = "ارتفع المؤشر 3.5 نقطة. قال «انتهى.» ثم غادر"
    got = pieces(text, sentence_spans(text))
    assert got == ["ارتفع المؤشر 3.5 نقطة.", " قال «انتهى.»", " ثم غادر"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("انعقد المؤتمر عام 2023. وحضره 800 مندوب.", ["انعقد المؤتمر عام 2023.", "وحضره 800 مندوب."]),
        ("كم عدد الدول؟ 76؟ نعم 76.", ["كم عدد الدول؟", "76؟", "نعم 76."]),
    ],
    ids=["dot-after-year", "question-mark-after-number"],
)
def test_sentence_ends_after_a_number(text: str, expected: list[str]) -> None:
    # Only a dot *between* digits (3.5) is not a boundary; "2023." at the end of a sentence is.
    spans = sentence_spans(text)
    assert_tiles(text, spans)
    assert [p.strip() for p in pieces(text, spans)] == expected


def test_sentence_spans_edge_cases() -> None:
    assert sentence_spans("") == []
    assert sentence_spans("\n\n") == [(0, 2)]
    text = "سؤال؟\n\n\nجواب."
    spans = sentence_spans(text)
    assert_tiles(text, spans)
    assert [p.strip() for p in pieces(text, spans)] == ["سؤال؟", "جواب."]


def test_sentence_spans_sub_range() -> None:
    text = "أولا. ثانيا. ثالثا."
    start, end = text.index("ثانيا"), len(text)
    spans = sentence_spans(text, start, end)
    assert_tiles(text, spans, start, end)
    assert [p.strip() for p in pieces(text, spans)] == ["ثانيا.", "ثالثا."]


def test_clause_spans_split_at_arabic_and_latin_commas() -> None:
    text = "حضر المؤتمر مندوبون من الصين، وإيران، وبيلاروسيا: وغيرها, والوقت 10:30 صباحا"
    spans = clause_spans(text, 0, len(text))
    assert_tiles(text, spans)
    assert [p.strip() for p in pieces(text, spans)] == [
        "حضر المؤتمر مندوبون من الصين،",
        "وإيران،",
        "وبيلاروسيا:",
        "وغيرها,",
        "والوقت 10:30 صباحا",
    ]
    assert clause_spans(text, 0, 0) == []


def test_trim_span() -> None:
    text = "  نص مهم \n"
    assert text[slice(*trim_span(text, 0, len(text)))] == "نص مهم"
    assert trim_span("   ", 0, 3) == (3, 3)


@pytest.mark.parametrize(
    ("marked", "answer"),
    [
        ("في 15 أغسطس 2023، ", "في 15 أغسطس 2023"),  # the clause's comma stays in the text
        ("منظمة شانغهاي للتعاون،", "منظمة شانغهاي للتعاون"),
        ("“عزيز نصير زاده", "عزيز نصير زاده"),  # its closing quote lies outside the span
        ("زاده”،", "زاده"),
        ("“الناتو”", "“الناتو”"),  # balanced quotes are part of the answer
        ("(وزير الدفاع)", "(وزير الدفاع)"),
        ("3.5%", "3.5%"),
        ("ما السبب؟", "ما السبب"),
        ("، ثم", "ثم"),
        ("،.", ""),
        # The seeds write ” on both sides of a title (a new-user test got "” أنظمة الدفاع…").
        ("” أنظمة الدفاع المضادة للصواريخ", "أنظمة الدفاع المضادة للصواريخ"),
        ("” أنظمة الدفاع”", "أنظمة الدفاع"),
        ("الدفاع «", "الدفاع"),  # an opening mark at the end opens nothing inside the span
    ],
)
def test_trim_answer_drops_edge_punctuation_and_unpaired_quotes(marked: str, answer: str) -> None:
    text = f"قال: {marked} انتهى"
    start = text.index(marked)
    s, e = trim_answer(text, start, start + len(marked))
    assert text[s:e] == answer and start <= s <= e <= start + len(marked)


def test_word_spans_drop_punctuation_and_keep_numbers_whole() -> None:
    text = "عُقد المؤتمر في 15 أغسطس 2023، بحضور “لي شانغفو” (وزير الدفاع) ونسبة 3.5% و 1,000 مندوب."
    words = [text[s:e] for s, e in word_spans(text)]
    assert words[:6] == ["عُقد", "المؤتمر", "في", "15", "أغسطس", "2023"]
    assert "لي" in words and "شانغفو" in words and "الدفاع" in words
    assert "3.5" in words and "1,000" in words
    assert not any(w.strip("“”()،.%") != w for w in words)
    assert word_spans(text, 5, 12) == [(5, 12)]  # a sub-range: "المؤتمر"


def test_phrase_break_at_arabic_punctuation_only() -> None:
    text = "من الصين، وإيران وبيلاروسيا"
    first, second, third = word_spans(text)[1:4]
    assert phrase_break(text, first[1], second[0])  # "،"
    assert not phrase_break(text, second[1], third[0])  # a space


@pytest.mark.parametrize(
    ("phrase", "found"),
    [
        ("مؤتمر موسكو", "مؤتمرُ موسكو"),  # diacritics in the text
        ("15 اغسطس 2023", "15 أغسطس 2023"),  # hamza folded
        ("الحادية عشرة", "الحادية عشرة"),
        ("مؤتمر لندن", None),
        ("", None),
    ],
)
def test_locate_matches_word_by_word_after_normalisation(phrase: str, found: str | None) -> None:
    text = "انعقد مؤتمرُ موسكو في نسخته الحادية عشرة في 15 أغسطس 2023، بحضور 76 دولة."
    span = locate(text, phrase)
    assert (text[span[0] : span[1]] if span else None) == found


def test_locate_does_not_match_inside_a_word() -> None:
    assert locate("حضر المؤتمرون", "المؤتمر") is None


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("متى عُقد مؤتمر موسكو للأمن الدولي؟", "when"),
        ("في أي سنة تأسس مؤتمر موسكو؟", "when"),
        ("حتى اي سنه كانت دول الناتو تشارك؟", "when"),
        ("المؤتمر ده اتعمل أول مرة إمتى؟", "when"),
        ("كم دولة جاء منها المندوبون؟", "how_many"),
        ("قديش مندوب حضر؟", "how_many"),
        ("ما عدد سكان القاهرة؟", "how_many"),
        ("من هو وزير الدفاع الروسي؟", "who"),
        ("مين اللي بوتين بيقول إنهم شنوا العدوان؟", "who"),
        ("أين ولد جمال خاشقجي؟", "where"),
        ("إلى أين يحاول أعضاء الناتو نقل الصراع؟", "where"),
        ("لماذا استقال الوزير؟", "why"),
        ("ليش بوتين بيقول إن الحرب طوّلت؟", "why"),
        ("كيف تم اختيار الرئيس؟", "how"),
        ("هل حضرت الدول الغربية مؤتمر 2023؟", "yes_no"),
        ("أي دولتين كان حضورهما لافتًا؟", "which"),
        ("ماذا قال الأمين العام عن المنتدى؟", "what"),
        ("ماهو منصب عزيز نصير زاده", "what"),
        ("When was the conference held?", "when"),
        ("How many countries took part?", "how_many"),
        ("Who headed the delegation?", "who"),
        ("Which ministry organizes the conference?", "which"),
        ("What did Putin call the regime?", "what"),
        ("Why did the war last so long?", "why"),
        ("عاصمة مصر", "other"),
        # Follow-ups start with the conjunction و or ف joined to the question word.
        ("ومتى تأسس؟", "when"),
        ("وكم دولة شاركت فيه؟", "how_many"),
        ("ومن ألقى الكلمة الافتتاحية فيه؟", "who"),
        ("وأين عقد؟", "where"),
        ("ولماذا؟", "why"),
        ("فكيف رد الغرب؟", "how"),
        ("وأي دولة زار أيضاً؟", "which"),
        ("وماذا قال عن الناتو؟", "what"),
        ("وهل حضرته الصين؟", "yes_no"),
        # ...but a word that only starts with those letters is not a question word.
        ("وفد إيران في المؤتمر", "other"),
    ],
)
def test_question_type(question: str, kind: str) -> None:
    assert question_type(question) == kind


@pytest.mark.parametrize(
    ("verb", "noun"),
    [("تأسس", "تأسيسه"), ("انعقد", "انعقاد"), ("شارك", "المشاركة"), ("حضر", "حضور"), ("أعلن", "اعلانه")],
)
def test_skeleton_joins_a_verb_and_its_verbal_noun(verb: str, noun: str) -> None:
    (a,), (b,) = terms(verb), terms(noun)
    assert a != b  # light stemming keeps them apart...
    assert skeleton(a) == skeleton(b) != ""  # ...the skeleton brings them together


def test_skeleton_is_empty_where_consonants_say_too_little() -> None:
    assert skeleton(terms("زار")[0]) == ""  # two consonants
    assert skeleton("conference") == ""
    assert skeleton(terms("دولة")[0]) == ""


# --- property tests ---------------------------------------------------------------------------------

ARABIC_ALPHABET = "ابتثجحخدذرسشصضطظعغفقكلمنهويىةءأإآؤئ"
CHUNK_TEXT = st.text(
    alphabet=st.sampled_from([*ARABIC_ALPHABET, " ", " ", " ", "\n", "\n", ".", "،", "؟", "؛", "3", "\u064e", "\t"]),
    max_size=600,
)


@PROPERTY
@given(st.text())
def test_normalize_never_raises_and_is_idempotent(text: str) -> None:
    once = normalize(text)
    assert isinstance(once, str)
    assert normalize(once) == once
    assert once == once.strip() and "  " not in once


@PROPERTY
@given(st.text())
def test_sentence_spans_tile_any_text(text: str) -> None:
    assert_tiles(text, sentence_spans(text))


@PROPERTY
@given(CHUNK_TEXT)
def test_sentence_and_clause_spans_tile_arabic_like_text(text: str) -> None:
    assert_tiles(text, sentence_spans(text))
    assert_tiles(text, clause_spans(text, 0, len(text)), 0, len(text))


@PROPERTY
@given(CHUNK_TEXT, st.integers(min_value=2, max_value=40), st.integers(min_value=0, max_value=39))
def test_chunks_cover_every_non_space_character(text: str, max_words: int, overlap: int) -> None:
    settings_ = ChunkSettings(max_words=max_words, overlap_words=min(overlap, max_words - 1))
    chunks = split_document(Document(page_content=text, metadata={"source": "doc.txt", "title": "عنوان"}), settings_)
    spans = [(c.metadata["start"], c.metadata["end"]) for c in chunks]
    for chunk, (start, end) in zip(chunks, spans):
        assert chunk.page_content == text[start:end]
        assert chunk.page_content.strip() == chunk.page_content and chunk.page_content
    assert uncovered_non_space(text, spans) == []
    assert [c.metadata["position"] for c in chunks] == list(range(len(chunks)))
    assert [s for s, _ in spans] == sorted(s for s, _ in spans)


@PROPERTY
@given(st.text(max_size=400))
def test_chunking_never_raises_on_arbitrary_unicode(text: str) -> None:
    chunks = split_document(Document(page_content=text, metadata={"source": "x.md", "title": "x"}), ChunkSettings(8, 2))
    spans = [(c.metadata["start"], c.metadata["end"]) for c in chunks]
    assert uncovered_non_space(text, spans) == []


# --- conversation cues -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("ومن ألقى الكلمة الافتتاحية فيه؟", ["فيه"]),  # preposition + attached pronoun
        ("وكم مندوباً حضره؟", ["حضره"]),  # verb + object pronoun
        ("وإلى ماذا دعا في كلمته؟", ["كلمته"]),  # noun + possessive pronoun
        ("وعلى أي مناطق ركز المؤتمر في ذلك العام؟", ["ذلك"]),  # demonstrative
        ("ومن ضمن هؤلاء الحلفاء؟", ["هؤلاء"]),
        ("ماذا قال هو عن الناتو؟", ["هو"]),  # a personal pronoun standing for someone
        ("What did he call for in his speech?", ["he", "his"]),
        ("How many countries attended it?", ["it"]),
    ],
)
def test_referring_words_find_pronouns_and_demonstratives(question: str, expected: list[str]) -> None:
    assert referring_words(question) == expected


@pytest.mark.parametrize(
    "question",
    [
        "من هو وزير الدفاع الروسي؟",  # copula after a question word
        "ما هي الجائزة التي حصل عليها نجيب محفوظ؟",  # the relative clause's own pronoun
        "ما الموضوع الذي ناقشته النسخة الأولى من المؤتمر؟",
        "ما معنى كلمة الله في اللغة؟",  # ه of a word with the article is a letter, not a pronoun
        "متى تأسست المدرسة الثانوية؟",  # ة is taa marbuta, not the pronoun ه
        "ما أهم نتائج المؤتمر؟",  # a short word ending in هم is a whole word
        "Which ministry organizes the Moscow Conference on International Security?",
    ],
)
def test_referring_words_ignore_words_that_only_look_like_pronouns(question: str) -> None:
    assert referring_words(question) == []


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("ومن ألقى الكلمة الافتتاحية فيه؟", True),
        ("وأي دولة زار أيضاً؟", True),
        ("فما الذي حدث بعد ذلك؟", True),
        ("وفي أي منظمة أعلن ذلك؟", True),
        ("And how many delegates attended it?", True),
        ("What about Iran?", True),
        ("وزير الدفاع الروسي من هو؟", False),  # و is a letter of وزير
        ("فلاديمير بوتين ماذا قال؟", False),
        ("من ألقى الكلمة الافتتاحية؟", False),
        ("Andorra's capital?", False),
        ("", False),
    ],
)
def test_continues_conversation(question: str, expected: bool) -> None:
    assert continues_conversation(question) is expected


def test_content_words_keep_the_topic_as_written() -> None:
    assert content_words("متى عُقد مؤتمر موسكو للأمن الدولي في نسخته الحادية عشرة؟") == [
        "عقد",
        "مؤتمر",
        "موسكو",
        "للأمن",
        "الدولي",
        "نسخته",
        "الحادية",
        "عشرة",
    ]
    assert content_words("بماذا اتهم بوتين الناتو؟") == ["اتهم", "بوتين", "الناتو"]  # ب + ماذا is a question word
    assert content_words("Who represented Iran at the conference?") == ["represented", "Iran", "conference"]


def test_has_letters_sees_words_of_any_script_not_numbers_or_marks() -> None:
    for text in ("2023 موسكو", "G20?", "ما هو 北京", "مُؤْتَمَر"):
        assert has_letters(text), text
    # Arabic-Indic digits, punctuation, diacritics and tatweel alone hold no letter.
    for text in ("١٢٣٤٥٦", "٢٠٢٣؟!", "15/8/2023 - 76", "ـــ", "\u064b\u064e\u0651", ""):
        assert not has_letters(text), text
