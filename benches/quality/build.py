#!/usr/bin/env python3
"""Builds Sputnik's answer-quality benchmark from Debian packages, deterministically.

Documents and questions are written by people, not for this benchmark: every question is the
heading that opened its passage in the published document (a FAQ question, a help page's title,
a section title), and the heading is removed from the passage, so the words of the question are
not handed to the search. Sources (see benches/quality/README.md for licences):

  faq       Debian FAQ, English and Russian (debian-faq, debian-faq-ru): one document per question
  manual    LibreOffice 7.4 help, English and Russian (libreoffice-help-en-us, -ru): one per page
  handbook  Debian Developer's Reference, English and Russian (developers-reference, -ru): one
            document per section, policy-like prose
  encyclo   XQuAD (Wikipedia paragraphs, English and Russian), only when --xquad DIR names a
            checkout of github.com/google-deepmind/xquad (it is not in a registry)

Every item (a passage published in both languages) is placed by a hash of its id: in both
languages, in English only, in Russian only, or in neither. Items in neither language make the
unanswerable questions — near misses, from the same documents' topics. An item present only in
the other language makes a cross-lingual question.

Writes OUT/corpus/{en,ru}/..., OUT/{bilingual,en,ru,slice}.jsonl and OUT/manifest.json. Each
language's folder is imported as its own root, so sources (and the questions' expected paths) are
relative to it and name their language: "faq/faq-0123456789.ru.md". `slice` is a small fixed
part for CI: OUT/slice/{en,ru} holds its documents.
"""

import argparse
import hashlib
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

PACKAGES = {
    "debian-faq": "11.1",
    "debian-faq-ru": "11.1",
    "libreoffice-help-en-us": None,
    "libreoffice-help-ru": None,
    "developers-reference": "12.18",
    "developers-reference-ru": "12.18",
}
# Placement by hash: per cent of items in both languages, English only, Russian only; the rest
# are held out (unanswerable).
BOTH, EN_ONLY, RU_ONLY = 50, 12, 12
# How many LibreOffice help pages: all how-to guides plus a fixed sample of the other pages.
MANUAL_ITEMS = 1500
SLICE_ITEMS = 60

BLOCK = {"p", "li", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "td", "th", "dt", "dd", "caption",
         "div", "tr", "blockquote", "section", "table", "ul", "ol", "dl", "br"}
SKIP = {"script", "style", "head", "nav", "footer", "header", "aside", "noscript", "title"}
SKIP_CLASSES = {"debug", "headerlink", "navheader", "navfooter", "sphinxsidebar", "related", "footer", "toc"}
VOID = {"br", "img", "meta", "link", "input", "hr", "area", "base", "col", "embed", "source", "wbr"}


class Blocks(html.parser.HTMLParser):
    """Flattens HTML into blocks: ("h", level, text, anchor) and ("p", 0, text, None)."""

    def __init__(self, start_id=None, stop_ids=()):
        super().__init__(convert_charrefs=True)
        self.blocks, self.text, self.kind = [], [], ("p", 0)
        self.skip_depth, self.stack = 0, []
        self.start_id, self.stop_ids = start_id, set(stop_ids)
        self.active = start_id is None
        self.anchor = None

    def flush(self):
        text = re.sub(r"\s+", " ", "".join(self.text)).strip()
        if text and self.active:
            self.blocks.append((self.kind[0], self.kind[1], text, self.anchor))
        self.text, self.kind = [], ("p", 0)
        self.anchor = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in VOID:
            if tag == "br":
                self.text.append(" ")
            return
        self.stack.append(tag)
        element_id = attrs.get("id")
        if self.start_id and element_id == self.start_id:
            self.active = True
        if element_id in self.stop_ids or (attrs.get("class") or "").split(" ")[0] in SKIP_CLASSES:
            self.skip_depth = self.skip_depth or len(self.stack)
            if element_id in self.stop_ids:
                self.active = False
        if self.skip_depth == 0 and (tag in SKIP or "hidden" in attrs or tag == "meta"):
            self.skip_depth = len(self.stack)
        if tag in BLOCK:
            self.flush()
            if re.fullmatch(r"h[1-6]", tag):
                self.kind = ("h", int(tag[1]))
        if tag in ("a", "section", "div", "h1", "h2", "h3", "h4") and (attrs.get("id") or attrs.get("name")):
            self.anchor = self.anchor or attrs.get("id") or attrs.get("name")

    def handle_endtag(self, tag):
        if tag in VOID or tag not in self.stack:
            return
        while self.stack:
            top = self.stack.pop()
            if self.skip_depth > len(self.stack):
                self.skip_depth = 0
            if top == tag:
                break
        if tag in BLOCK:
            self.flush()

    def handle_data(self, data):
        if self.skip_depth == 0:
            self.text.append(data)

    def close(self):
        super().close()
        self.flush()
        return self.blocks


def blocks_of(path, **kw):
    parser = Blocks(**kw)
    parser.feed(Path(path).read_text(encoding="utf-8", errors="replace"))
    return parser.close()


NUMBERING = re.compile(r"^(?:(?:Глава|Chapter|Приложение|Appendix)\s+)?[\dA-Z]*(?:\.\d+)*\.?\s+")


def clean_heading(text):
    text = text.replace("¶", "").strip()
    return NUMBERING.sub("", text).strip()


def is_language(text, lang):
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    cyrillic = sum("CYRILLIC" in unicodedata.name(c, "") for c in letters) / len(letters)
    return cyrillic > 0.5 if lang == "ru" else cyrillic == 0.0


def markdown(chapter, blocks):
    lines = [f"# {chapter}", ""] if chapter else []
    for kind, level, text, _ in blocks:
        lines += [("#" * min(level, 6) + " " + text) if kind == "h" else text, ""]
    return "\n".join(lines).strip() + "\n"


# ---------------------------------------------------------------- sources


def faq_items(root):
    """Debian FAQ: one item per question (h2), keyed by its anchor."""
    items = {}
    paths = {
        "en": sorted((root / "debian-faq/usr/share/doc/debian/FAQ").glob("*.en.html")),
        "ru": sorted((root / "debian-faq-ru/usr/share/doc/debian/FAQ/ru").glob("*.ru.html")),
    }
    for lang, files in paths.items():
        for path in files:
            if path.name.startswith(("index.", "faqinfo.")):
                continue
            blocks = blocks_of(path)
            chapter = next((clean_heading(t) for k, lv, t, _ in blocks if k == "h" and lv == 1), "")
            current = None
            for kind, level, text, anchor in blocks:
                if kind == "h" and level <= 2:
                    current = None
                    if level == 2 and anchor:
                        current = items.setdefault(f"faq/{anchor}", {"kind": "faq"})
                        current[lang] = {"question": clean_heading(text), "chapter": chapter, "blocks": []}
                    continue
                if current is not None and lang in current:
                    current[lang]["blocks"].append((kind, max(level - 1, 2), text, None))
    return items


def handbook_items(root):
    """Developer's Reference: one item per section (h2 or h3), keyed by its section id."""
    items = {}
    dirs = {
        "en": root / "developers-reference/usr/share/developers-reference",
        "ru": root / "developers-reference-ru/usr/share/developers-reference/ru",
    }
    chapters = ["best-pkging-practices", "beyond-pkging", "developer-duties", "l10n", "new-maintainer",
                "pkgs", "resources", "tools"]
    for lang, directory in dirs.items():
        for name in chapters:
            blocks = blocks_of(directory / f"{name}.html", start_id=None)
            chapter = next((clean_heading(t) for k, lv, t, _ in blocks if k == "h" and lv == 1), "")
            current = None
            for kind, level, text, anchor in blocks:
                if kind == "h" and level in (2, 3):
                    key = f"handbook/{name}/{anchor or clean_heading(text)}"
                    current = items.setdefault(key, {"kind": "handbook"})
                    current[lang] = {"question": clean_heading(text), "chapter": chapter, "blocks": []}
                    continue
                if kind == "h" and level <= 1:
                    current = None
                    continue
                if current is not None and text.strip() not in ("Navigation", "Навигация"):
                    current[lang]["blocks"].append((kind, level, text.replace("¶", ""), None))
    return items


def manual_items(root):
    """LibreOffice help: one item per page, keyed by its path; the title (h1) is the question."""
    en = root / "libreoffice-help-en-us/usr/share/libreoffice/help/en-US"
    ru = root / "libreoffice-help-ru/usr/share/libreoffice/help/ru"
    pages = sorted(p.relative_to(en).as_posix() for p in (en / "text").rglob("*.html"))
    guides = [p for p in pages if "/guide/" in p]
    others = sorted((p for p in pages if "/guide/" not in p), key=lambda p: digest(p))
    chosen = guides + others[: max(0, MANUAL_ITEMS - len(guides))]
    items = {}
    for page in sorted(chosen):
        item = {"kind": "manual"}
        for lang, directory in (("en", en), ("ru", ru)):
            path = directory / page
            if not path.exists():
                continue
            blocks = blocks_of(path, start_id="DisplayArea", stop_ids=("SearchFrame", "DEBUG"))
            title = next((t for k, lv, t, _ in blocks if k == "h" and lv == 1), None)
            if not title:
                continue
            body = []
            seen_title = False
            for block in blocks:
                if block[0] == "h" and block[1] == 1 and not seen_title:
                    seen_title = True
                    continue
                body.append(block)
            module = page.split("/")[1]
            item[lang] = {"question": title, "chapter": "", "blocks": body, "module": module}
        items[f"manual/{page}"] = item
    return items


def xquad_items(directory):
    """XQuAD: one item per Wikipedia paragraph; every question on it is a question."""
    data = {}
    for lang in ("en", "ru"):
        data[lang] = json.loads((Path(directory) / f"xquad.{lang}.json").read_text(encoding="utf-8"))
    items = {}
    for lang, dataset in data.items():
        for a, article in enumerate(dataset["data"]):
            for p, paragraph in enumerate(article["paragraphs"]):
                item = items.setdefault(f"encyclo/{a:03}/{p:02}", {"kind": "encyclo"})
                title = article.get("title", "").replace("_", " ")
                item[lang] = {
                    "question": None,
                    "questions": [(qa["id"], qa["question"]) for qa in paragraph["qas"]],
                    "chapter": "",
                    "blocks": [("p", 0, paragraph["context"], None)],
                    "title": title,
                }
    return items


# ---------------------------------------------------------------- placement and output


def digest(text):
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


def placement(key):
    bucket = digest("place:" + key) % 100
    if bucket < BOTH:
        return {"en", "ru"}
    if bucket < BOTH + EN_ONLY:
        return {"en"}
    if bucket < BOTH + EN_ONLY + RU_ONLY:
        return {"ru"}
    return set()


def normalise_question(text):
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def download(packages, into):
    into.mkdir(parents=True, exist_ok=True)
    names = [f"{name}={version}" if version else name for name, version in packages.items()]
    missing = [n for n in packages if not list(into.glob(f"{n}_*.deb"))]
    if missing:
        command = ["apt-get", "download"] + [n for n in names if n.split("=")[0] in missing]
        if subprocess.run(command, cwd=into).returncode != 0:
            print("apt-get download failed; updating the package lists and trying again", file=sys.stderr)
            sudo = [] if os.geteuid() == 0 else ["sudo"]
            subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
            subprocess.run(command, cwd=into, check=True)
    root = into / "x"
    for name in packages:
        target = root / name
        if not target.exists():
            deb = sorted(into.glob(f"{name}_*.deb"))[-1]
            target.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--xquad", type=Path, help="a checkout of github.com/google-deepmind/xquad")
    parser.add_argument("--debs", type=Path, help="where .deb files are kept [OUT/debs]")
    args = parser.parse_args()
    out = args.out
    root = download(PACKAGES, args.debs or out / "debs")

    items = {}
    items.update(faq_items(root))
    items.update(handbook_items(root))
    items.update(manual_items(root))
    xquad = args.xquad or (Path(__file__).resolve().parents[3] / "shared/data/xquad")
    if xquad and (Path(xquad) / "xquad.ru.json").exists():
        items.update(xquad_items(xquad))
        print(f"including XQuAD from {xquad}", file=sys.stderr)

    corpus = out / "corpus"
    if corpus.exists():
        shutil.rmtree(corpus)
    slice_root = out / "slice"
    if slice_root.exists():
        shutil.rmtree(slice_root)
    # Documents: file names carry no words of the item (a hash), so the title cannot leak.
    documents = {}  # (key, lang) -> relative path under corpus/
    # The slice is drawn from the registry-built kinds only, so CI checks the same questions
    # whether or not XQuAD is present.
    registry_built = [k for k in items if items[k]["kind"] != "encyclo"]
    slice_keys = set(sorted(registry_built, key=lambda k: digest("slice:" + k))[:SLICE_ITEMS])
    for key, item in sorted(items.items()):
        present = placement(key)
        for lang in ("en", "ru"):
            entry = item.get(lang)
            if not entry or lang not in present or not entry["blocks"]:
                continue
            text = markdown(entry["chapter"] or entry.get("title", ""), entry["blocks"])
            if len(text) < 80:
                continue
            # Paths are relative to the language's folder, the root each language is imported from.
            relative = f"{item['kind']}/{item['kind']}-{digest(key) % 10**10:010}.{lang}.md"
            documents[(key, lang)] = relative
            for base in [corpus] + ([slice_root] if key in slice_keys else []):
                path = base / lang / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")

    # Questions, grouped by their normalised text: two pages with one title answer each other's.
    questions = []
    for key, item in sorted(items.items()):
        for lang in ("en", "ru"):
            entry = item.get(lang)
            if not entry:
                continue
            asked = entry.get("questions") or [(None, entry["question"])]
            for qid, text in asked:
                if not text or not is_language(text, lang) or len(text) < 4:
                    continue
                questions.append({"key": key, "kind": item["kind"], "lang": lang, "text": text,
                                  "id": f"{lang}:{key}" + (f":{qid}" if qid else "")})
    by_text = {}
    for q in questions:
        by_text.setdefault((q["lang"], normalise_question(q["text"])), set()).add(q["key"])
    # An item's questions in both languages share an answer: the item's documents in either.
    sets = {"bilingual": [], "en": [], "ru": [], "slice": []}
    for q in questions:
        keys = by_text[(q["lang"], normalise_question(q["text"]))]
        expected_all = sorted(documents[(k, l)] for k in keys for l in ("en", "ru") if (k, l) in documents)
        in_slice = {documents[(k, l)] for k in keys if k in slice_keys for l in ("en", "ru") if (k, l) in documents}
        base = {"id": q["id"], "query": q["text"], "lang": q["lang"], "set": q["kind"]}
        sets["bilingual"].append({**base, "expected": expected_all})
        if q["key"] in slice_keys:
            sets["slice"].append({**base, "expected": sorted(in_slice)})
        own = [e for e in expected_all if e.endswith(f".{q['lang']}.md")]
        sets[q["lang"]].append({**base, "expected": own})
    for name, rows in sets.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    manifest = {"documents": {}, "questions": {}}
    for (key, lang), _ in documents.items():
        kind = items[key]["kind"]
        manifest["documents"].setdefault(lang, {}).setdefault(kind, 0)
        manifest["documents"][lang][kind] += 1
    for name, rows in sets.items():
        counts = {}
        for row in rows:
            langs = {e.rsplit(".", 2)[1] for e in row["expected"]} if name in ("bilingual", "slice") else (
                {row["lang"]} if row["expected"] else set())
            direction = ("none" if not row["expected"] else "same" if row["lang"] in langs else "cross")
            label = f"{row['lang']} {direction}"
            counts[label] = counts.get(label, 0) + 1
        manifest["questions"][name] = dict(sorted(counts.items()))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(manifest, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
