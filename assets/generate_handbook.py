#!/usr/bin/env python3
"""Builds the sample handbook's PDF, DOCX and ODT files from the plain sources in handbook-src/,
plus the encrypted PDF the import tests need.

The generated files are committed, so neither the tests nor CI need Python. Rerun after editing
a source:  pip install fpdf2==2.8.9 python-docx==1.2.0 && python3 assets/generate_handbook.py

Source markup: `@title T` sets the document title (metadata), `# ` and `## ` start headings,
blank lines separate paragraphs, other lines are joined into paragraphs.
"""
import datetime
import pathlib
import zipfile
from xml.sax.saxutils import escape

from docx import Document
from fpdf import FPDF

HERE = pathlib.Path(__file__).resolve().parent
SRC = HERE / "handbook-src"
OUT = HERE / "handbook"
FONT_DIR = pathlib.Path("/usr/share/fonts/truetype/dejavu")
FIXED_DATE = datetime.datetime(2026, 1, 15, 9, 0, tzinfo=datetime.timezone.utc)


def read_source(name):
    """Returns (title, blocks) where blocks are ("h1"|"h2"|"p", text)."""
    title, blocks, paragraph = None, [], []

    def flush():
        if paragraph:
            blocks.append(("p", " ".join(paragraph)))
            paragraph.clear()

    for line in (SRC / name).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("@title "):
            title = line[len("@title "):]
        elif line.startswith("@"):
            continue
        elif line.startswith("## "):
            flush()
            blocks.append(("h2", line[3:]))
        elif line.startswith("# "):
            flush()
            blocks.append(("h1", line[2:]))
        elif not line:
            flush()
        else:
            paragraph.append(line)
    flush()
    return title, blocks


def make_pdf(source, target, password=None):
    title, blocks = read_source(source)
    pdf = FPDF()
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(title)
    pdf.set_author("Polaris Systems")
    pdf.add_font("DejaVu", "", str(FONT_DIR / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
    if password:
        pdf.set_encryption(owner_password="owner-" + password, user_password=password)
    pdf.add_page()
    for kind, text in blocks:
        if kind == "p":
            pdf.set_font("DejaVu", "", 11)
            pdf.multi_cell(0, 6, text)
            pdf.ln(3)
        else:
            pdf.set_font("DejaVu", "B", 18 if kind == "h1" else 14)
            pdf.multi_cell(0, 9, text)
            pdf.ln(2)
    pdf.output(str(target))


def make_docx(source, target):
    title, blocks = read_source(source)
    doc = Document()
    doc.core_properties.title = title
    doc.core_properties.author = "Polaris Systems"
    doc.core_properties.created = FIXED_DATE.replace(tzinfo=None)
    doc.core_properties.modified = FIXED_DATE.replace(tzinfo=None)
    for kind, text in blocks:
        if kind == "h1":
            doc.add_heading(text, level=1)
        elif kind == "h2":
            doc.add_heading(text, level=2)
        else:
            doc.add_paragraph(text)
    doc.save(str(target))


ODT_MANIFEST = """<?xml version="1.0" encoding="UTF-8"?>
<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">
 <manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.text"/>
 <manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>
 <manifest:file-entry manifest:full-path="meta.xml" manifest:media-type="text/xml"/>
</manifest:manifest>
"""


def make_odt(source, target):
    title, blocks = read_source(source)
    body = []
    for kind, text in blocks:
        if kind == "p":
            body.append(f"<text:p>{escape(text)}</text:p>")
        else:
            level = 1 if kind == "h1" else 2
            body.append(f'<text:h text:outline-level="{level}">{escape(text)}</text:h>')
    content = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
        "<office:body><office:text>" + "".join(body) + "</office:text></office:body></office:document-content>"
    )
    meta = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<office:document-meta xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" office:version="1.2">'
        f"<office:meta><dc:title>{escape(title)}</dc:title></office:meta></office:document-meta>"
    )
    stamp = (2026, 1, 15, 9, 0, 0)
    with zipfile.ZipFile(target, "w") as odt:
        # The mimetype must come first and be stored uncompressed.
        odt.writestr(zipfile.ZipInfo("mimetype", stamp), "application/vnd.oasis.opendocument.text")
        for name, data in [("content.xml", content), ("meta.xml", meta), ("META-INF/manifest.xml", ODT_MANIFEST)]:
            info = zipfile.ZipInfo(name, stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            odt.writestr(info, data)


def main():
    make_pdf("security-policy.txt", OUT / "en" / "security-policy.pdf")
    make_docx("benefits.txt", OUT / "en" / "benefits.docx")
    make_docx("zarplata.txt", OUT / "ru" / "zarplata.docx")
    make_pdf("komandirovki.txt", OUT / "ru" / "komandirovki.pdf")
    make_odt("obuchenie.txt", OUT / "ru" / "obuchenie.odt")
    testdata = HERE.parent / "tests" / "data"
    testdata.mkdir(parents=True, exist_ok=True)
    make_pdf("security-policy.txt", testdata / "encrypted.pdf", password="s3cret")


if __name__ == "__main__":
    main()
