#!/usr/bin/env python3
"""Assembles tests/data/e5_parity_set.tsv, the 500 texts the multilingual-e5-small parity test
feeds to Sputnik and to the reference engine: sentences of the sample handbook (both languages),
every evaluation question, and hand-written texts that exercise the tokenizer's corners
(ё, quotes and dashes, digits and codes, mixed scripts, full-width forms, tabs and repeated spaces,
zero-width and control characters, emoji, accents, literal special tokens, characters outside the
vocabulary). Each line is "q<TAB>text" (embedded as a query) or
"p<TAB>text" (as a passage). Run from the repository root; the output is committed.
"""
import json
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOTAL = 500

CORNERS = [
    "Ёлка стоит в холле, а ещё там кофемашина.",
    "«Ёжик» — это внутреннее название проекта; см. раздел 3.2.",
    "Код доступа: SPB-2024-ОФИС, пароль меняется каждые 90 дней.",
    "The VPN gateway is vpn.example.com:443 (TLS 1.3 only).",
    "Email hr@example.com or call +7 (812) 555-01-23 before 18:00.",
    "Mixed text: отпуск (vacation) is 28 календарных days.",
    "ＦＵＬＬＷＩＤＴＨ letters and ｄｉｇｉｔｓ １２３ are normalised.",
    "Tabs\tbetween\twords and    many   spaces.",
    "Zero\u200bwidth\u200cjoiners\u200dhere.",
    "Café, naïve, façade and résumé keep their accents.",
    "Decomposed accents: Cafe\u0301 and nai\u0308ve.",
    "Ligatures ﬁ and ﬂ, the sign № 5 and ½ cup.",
    "Emoji are rare in handbooks 🙂 but employees use them 👍🏽.",
    "Привет 👋 как дела?",
    "Ｔｅｌｅｇｒａｍ бот отвечает на вопросы.",
    "Римские цифры Ⅻ и надстрочные x² тоже встречаются.",
    "    Leading spaces and a trailing one ",
    "UPPERCASE QUESTION ABOUT THE DRESS CODE?",
    "ЗАГЛАВНЫМИ: КОГДА ВЫПЛАЧИВАЕТСЯ ЗАРПЛАТА?",
    "what is the wifi password",
    "a",
    "?",
    "1234567890",
    "Как оформить командировку в Москву на 3 дня?",
    "Кто мой бадди в первую неделю?",
    "Deutsch: Wie beantrage ich Urlaub?",
    "Français : comment demander un congé ?",
    "Español: ¿cómo pido vacaciones?",
    "Українська: як отримати ноутбук?",
    "中文：如何申请休假？",
    "Characters outside the vocabulary: 𠀀𠀁𠀂 in a row.",
    "Ａ\u0301 is a full-width letter with a combining accent.",
    "Literal markers <s>, </s>, <pad> and <unk> in a message.",
    "\u2581starts with the metaspace marker itself.",
    "Control\x01\x02characters\x7f and a carriage\rreturn.",
    "Hangul 한국어 and Thai ภาษาไทย in one line.",
    "\ufeffA byte-order mark at the start.",
]


def sentences(text):
    text = re.sub(r"[#*_>`|\[\]]", " ", text)
    for part in re.split(r"(?<=[.!?])\s+|\n\s*\n|\n[-•]\s*", text):
        part = " ".join(part.split())
        if 12 <= len(part) <= 300:
            yield part


def main():
    texts = []
    for line in (ROOT / "assets/handbook-questions.jsonl").read_text().splitlines():
        texts.append(("q", json.loads(line)["query"]))
    texts += [("q" if i % 2 == 0 else "p", t) for i, t in enumerate(CORNERS)]
    pool = []
    sources = ["handbook/*/*", "handbook-src/*", "handbook-managers/*", "handbook-managers/*/*"]
    for path in sorted(p for pattern in sources for p in (ROOT / "assets").glob(pattern)):
        if path.suffix in (".md", ".txt"):
            pool += list(sentences(path.read_text()))
        elif path.suffix == ".html":
            pool += list(sentences(re.sub(r"<[^>]+>", "\n", path.read_text())))
    seen = {t for _, t in texts}
    for i, text in enumerate(pool):
        if len(texts) >= TOTAL:
            break
        if text not in seen and "\t" not in text:
            seen.add(text)
            texts.append(("p" if i % 3 else "q", text))
    if len(texts) < TOTAL:
        raise SystemExit(f"only {len(texts)} texts")
    out = ROOT / "tests/data/e5_parity_set.tsv"
    out.write_text("".join(f"{mode}\t{text}\n" for mode, text in texts))
    print(f"{out.relative_to(ROOT)}: {len(texts)} texts")


if __name__ == "__main__":
    main()
