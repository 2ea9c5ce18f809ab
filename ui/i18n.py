"""Every string the interface shows, in Arabic and English: one catalogue, looked up by key.

Labels reach Gradio as `gr.I18n` keys, so the page follows the browser's language, and Gradio's own
strings ("Drop File Here") follow with it. The header switch stores a choice in the browser and
reloads the page in that language. Messages built on the server (upload status, errors) take the
page's language, or the language of the question they are about.
"""

from __future__ import annotations

from index.arabic import language

LANGUAGES = ("ar", "en")

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "title": "Ask your documents",
        "heading": "## Ask your documents",
        "tab_chat": "Chat",
        "tab_documents": "Documents",
        "chat": "Conversation",
        "question_placeholder": "Type your question… (Enter sends, Shift+Enter for a new line)",
        "question_label": "Your question",
        "ask": "Ask",
        "stop": "Stop",
        "examples": "Examples",
        "settings": "Settings",
        "passages": "Passages to retrieve",
        "answer_mode": "Answer mode",
        "answer_mode_no_llm": "Answer mode (LLM: set RAG_LLM_BASE_URL and RAG_LLM_MODEL)",
        "show_scores": "Show retrieval scores",
        "question_limit": "Questions are limited to {limit} characters.",
        "new_conversation": "New conversation",
        "interface_language": "Interface language",
        "documents_table": "Indexed documents",
        "col_title": "Title",
        "col_file": "File",
        "col_chunks": "Chunks",
        "col_kb": "KB",
        "upload_note": "Upload .txt/.md (up to {limit} MB), PDF (scans are OCR'd; up to 50 MB), Word .docx, "
        "saved web pages .html or page images (up to 20 MB).",
        "upload": "Add documents",
        "status": "Status",
        "remove_pick": "Remove a document",
        "remove": "Remove…",
        "remove_confirm": "Remove **{title}** ({name}) from the index? Its file goes to the trash, "
        "from where you can restore it.",
        "remove_yes": "Yes, remove it",
        "cancel": "Cancel",
        "trash": "Trash",
        "trash_note": "Removed documents and replaced versions stay here until you empty the trash.",
        "trash_pick": "In the trash",
        "restore": "Restore",
        "empty_trash": "Empty the trash…",
        "empty_confirm": "Delete every document in the trash for good? This cannot be undone.",
        "empty_yes": "Yes, delete them for good",
        "choose_document": "Choose a document first.",
        "choose_trashed": "Choose a document in the trash first.",
        "indexing": "Indexing…",
        "indexing_failed": "Indexing failed; the existing index is unchanged.",
        "answer_failed": "Something went wrong while answering; please try again.",
        "index_unusable": "The index cannot be used: {reason}",
        "question_empty": "Please type a question.",
        "question_too_long": "The question is {length} characters long; the limit is {limit}.",
        "question_no_words": "The question has no words to search for (only punctuation or marks).",
        "question_mode_unavailable": "LLM answers are not available; set RAG_LLM_BASE_URL and RAG_LLM_MODEL.",
        "indexed": "Indexed: {names}",
        "reindexed": "Re-indexed (changed): {names}",
        "renamed": "Stored under a new name (the name was taken): {names}",
        "replaced": "Previous version moved to the trash (restorable): {names}",
        "duplicates": "Already indexed: {names}",
        "rejected": "Rejected: {reasons}",
        "nothing_to_do": "Nothing to do.",
        "not_in_index": "{name} is not in the index.",
        "removed": "Removed {title} ({name}); it is in the trash and can be restored.",
        "restored": "Restored {title}.",
        "restored_as": "Restored {title} as {name} (the name was taken).",
        "restore_failed": "Could not restore: {reason}",
        "emptied": "Emptied the trash ({count} deleted for good).",
    },
    "ar": {
        "title": "اسأل مستنداتك",
        "heading": "## اسأل مستنداتك",
        "tab_chat": "المحادثة",
        "tab_documents": "المستندات",
        "chat": "المحادثة",
        "question_placeholder": "اكتب سؤالك هنا… (Enter للإرسال، Shift+Enter لسطر جديد)",
        "question_label": "سؤالك",
        "ask": "اسأل",
        "stop": "إيقاف",
        "examples": "أمثلة",
        "settings": "الإعدادات",
        "passages": "عدد المقاطع المسترجعة",
        "answer_mode": "طريقة الإجابة",
        "answer_mode_no_llm": "طريقة الإجابة (للنموذج اللغوي: اضبط RAG_LLM_BASE_URL و RAG_LLM_MODEL)",
        "show_scores": "إظهار درجات الاسترجاع",
        "question_limit": "الحد الأقصى لطول السؤال {limit} حرف.",
        "new_conversation": "محادثة جديدة",
        "interface_language": "لغة الواجهة",
        "documents_table": "المستندات المفهرسة",
        "col_title": "العنوان",
        "col_file": "الملف",
        "col_chunks": "المقاطع",
        "col_kb": "ك.ب",
        "upload_note": "ارفع ملفات ‎.txt‎/‎.md‎ (حتى {limit} ميغابايت)، أو PDF (تقرأ الصفحات الممسوحة ضوئيا؛ حتى 50 "
        "ميغابايت)، أو Word ‎.docx‎، أو صفحات ويب محفوظة ‎.html‎، أو صور صفحات (حتى 20 ميغابايت).",
        "upload": "إضافة مستندات",
        "status": "الحالة",
        "remove_pick": "حذف مستند",
        "remove": "حذف…",
        "remove_confirm": "هل تريد حذف **{title}** ({name}) من الفهرس؟ سينقل ملفه إلى سلة المحذوفات، "
        "ويمكنك استعادته منها.",
        "remove_yes": "نعم، احذفه",
        "cancel": "إلغاء",
        "trash": "سلة المحذوفات",
        "trash_note": "تبقى المستندات المحذوفة والنسخ المستبدلة هنا حتى تفرغ السلة.",
        "trash_pick": "في السلة",
        "restore": "استعادة",
        "empty_trash": "إفراغ السلة…",
        "empty_confirm": "هل تريد حذف كل ما في السلة نهائيا؟ لا يمكن التراجع عن ذلك.",
        "empty_yes": "نعم، احذفها نهائيا",
        "choose_document": "اختر مستندا أولا.",
        "choose_trashed": "اختر مستندا من السلة أولا.",
        "indexing": "جار الفهرسة…",
        "indexing_failed": "تعذرت الفهرسة؛ لم يتغير الفهرس الحالي.",
        "answer_failed": "حدث خطأ أثناء الإجابة؛ يرجى المحاولة مرة أخرى.",
        "index_unusable": "لا يمكن استخدام الفهرس: {reason}",
        "question_empty": "يرجى كتابة سؤال.",
        "question_too_long": "طول السؤال {length} حرف، والحد الأقصى {limit}.",
        "question_no_words": "لا يحتوي السؤال على كلمات يمكن البحث عنها (علامات ترقيم فقط).",
        "question_mode_unavailable": "إجابات النموذج اللغوي غير متاحة؛ اضبط RAG_LLM_BASE_URL و RAG_LLM_MODEL.",
        "indexed": "تمت الفهرسة: {names}",
        "reindexed": "أعيدت الفهرسة (تغير المحتوى): {names}",
        "renamed": "حفظ باسم جديد (الاسم مستخدم): {names}",
        "replaced": "نقلت النسخة السابقة إلى سلة المحذوفات (يمكن استعادتها): {names}",
        "duplicates": "مفهرس من قبل: {names}",
        "rejected": "مرفوض: {reasons}",
        "nothing_to_do": "لا شيء لفعله.",
        "not_in_index": "{name} ليس في الفهرس.",
        "removed": "حذف {title} ({name})؛ وهو في سلة المحذوفات ويمكن استعادته.",
        "restored": "استعيد {title}.",
        "restored_as": "استعيد {title} باسم {name} (الاسم مستخدم).",
        "restore_failed": "تعذرت الاستعادة: {reason}",
        "emptied": "أفرغت السلة (حذف {count} نهائيا).",
    },
}


def normalise_language(code: str | None) -> str:
    """'ar-EG', 'ar' -> 'ar'; anything else -> 'en'."""
    return "ar" if (code or "").strip().lower().startswith("ar") else "en"


def t(lang: str | None, key: str, **params: object) -> str:
    """The message `key` in `lang` ('ar' or 'en'), with its {placeholders} filled."""
    return MESSAGES[normalise_language(lang)][key].format(**params)


def for_question(question: str, page_lang: str | None) -> str:
    """Messages about a question speak its language; an empty question gets the page's."""
    return language(question) if question.strip() else normalise_language(page_lang)
