"""Follow-up questions without an LLM: give a question that leans on the conversation the topic
words of the question before it, so retrieval finds the passage the user is still talking about.

"ومن مثّلها؟" after "ما الرسالة التي أرادت إيران إيصالها بمشاركتها في مؤتمر موسكو؟" is searched as
"ومن مثّلها؟ (الرسالة أرادت إيران إيصالها بمشاركتها مؤتمر موسكو)". The LLM mode rewrites follow-ups
with the model (rag/llm.py `QuestionRewriter`); this is the extractive mode's counterpart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from index.arabic import terms
from rag.wording import ENGLISH_PRONOUNS, content_words, continues_conversation, referring_words

# Same window as the LLM rewrite (rag/llm.py MAX_HISTORY_TURNS): a topic older than three turns is
# rarely what a pronoun points to.
MAX_HISTORY_TURNS = 3

# A question that only *refers* (a pronoun or demonstrative, no leading و/ف/"And") counts as a
# follow-up when it names at most this many content terms of its own. Measured on
# eval/questions/seeds.jsonl: every self-contained question there that contains a pronoun
# ("كم دولة جاء منها المندوبون إلى مؤتمر موسكو 2023؟") has 5 or more, while the pronoun-only
# follow-ups in eval/questions/followups.jsonl have 2-4 ("Which other country did he visit?" has 3),
# except one that also names a new entity ("...did he say China would...", 7: searched as typed).
# Held out: 663 of the 693 ARCD-train questions (95.7%) are left unchanged, and reading the other 30,
# 17 do lean on their paragraph ("من رسمها؟", "كم عدد سكانها؟"); `python -m eval.followups --show`.
MAX_FOLLOW_UP_TERMS = 4


@dataclass(frozen=True)
class FollowUpResolver:
    """Turns a follow-up question into the stand-alone question used for retrieval and answering.

    Only the earlier *questions* are read, not the answers: an extractive answer is several
    sentences of document text, and appending it would drown the follow-up's own words.
    A question that does not lean on the conversation comes back unchanged, character for character.
    """

    max_follow_up_terms: int = MAX_FOLLOW_UP_TERMS
    max_turns: int = MAX_HISTORY_TURNS

    def is_follow_up(self, question: str) -> bool:
        """Does the question need the conversation to be understood?

        It does when it opens like a reply (ومن، وكم، فما، "And ...") or when it points back with a
        pronoun or demonstrative while naming too little of its own to be searched alone.
        """
        if continues_conversation(question):
            return True
        # An Arabic pronoun is attached to a content word, which stays counted; an English one is a
        # word of its own: "What will their actions destroy?" names 3 things, not 4.
        own_terms = [t for t in terms(question) if t not in ENGLISH_PRONOUNS]
        return bool(referring_words(question)) and len(own_terms) <= self.max_follow_up_terms

    def resolve(self, history: Sequence[str], question: str, answers: Sequence[str] = ()) -> str:
        """The stand-alone form of `question` given the earlier questions (oldest first) and,
        where known, their answers (the same order; "" for one not known).

        Earlier follow-ups are resolved first, so the topic carries through a chain of them
        ("Who represented Iran?" → "What did he call for?" → "And where?"). A follow-up that points
        back with a pronoun also gets the entity the previous answer named ("وما هو منصبه؟" after
        "من ترأس الوفد الإيراني؟" answered «عزيز نصير زاده» is searched with that name): the
        pronoun is about the person or body just answered more often than about the question's words.
        """
        turns = list(zip(history, [*answers, *[""] * len(history)]))[-self.max_turns :]
        context, entity = "", ""
        for earlier, said in turns:
            context = self._resolve_one(earlier, context, entity)
            entity = answered_entity(said)
        return self._resolve_one(question, context, entity)

    def _resolve_one(self, question: str, context: str, entity: str = "") -> str:
        if not context or not self.is_follow_up(question):
            return question
        own = set(terms(question))
        inherited: list[str] = []
        if entity and referring_words(question) and not set(terms(entity)) <= own:
            inherited.append(entity)
        for word in content_words(context):
            key = terms(word)
            if key and key[0] not in own and word not in inherited:
                inherited.append(word)
        return f"{question} ({' '.join(inherited)})" if inherited else question


# An answer's short answer comes before " — " (rag/answer.py); a name or body is a few words.
MAX_ENTITY_WORDS = 6


def answered_entity(answer: str) -> str:
    """The person, body or thing an earlier answer named in bold ("" when it named none): the
    short answer before " — " in an extractive answer, if it is a few words with no digits (a
    date or count is not what a pronoun points to)."""
    short, dash, _ = answer.partition(" — ")
    short = short.strip()
    if not dash or not short or "[" in short or len(short.split()) > MAX_ENTITY_WORDS:
        return ""
    return "" if any(ch.isdigit() for ch in short) else short
