//! Parsers turn a file's bytes into a [`ParsedDocument`]: a title and a list of sections, each
//! with its heading path and plain-text paragraphs. Every parser is bounded by [`ParseLimits`]
//! and reports a [`ParseError`] whose message is meant for the person who supplied the file.

mod docx;
mod html;
mod markdown;
mod odt;
mod pdf;
mod text;
mod zipped;

use crate::store::Format;

/// What a parser produces: no formatting, only structure that matters for citations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedDocument {
    /// The document's own title (metadata or first top-level heading), if it has one.
    pub title: Option<String>,
    pub sections: Vec<Section>,
    /// Parts left out because they could not be read (a PDF page that does not decode).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    /// Headings above this section's text, outermost first, not including the title.
    pub heading_path: Vec<String>,
    pub paragraphs: Vec<String>,
}

impl ParsedDocument {
    pub fn is_empty(&self) -> bool {
        self.sections.iter().all(|s| s.paragraphs.iter().all(|p| p.trim().is_empty()))
    }
}

/// How deep elements may nest in any document (HTML elements, DOCX/ODT XML elements, Markdown
/// blocks, PDF drawings inside drawings). Real documents stay far below it (a page exported
/// from a wiki nests about 30 deep); a parser that walks a tree recursively needs the bound so
/// that a small hostile file cannot overflow the stack, which aborts the whole process.
pub const MAX_NESTING: usize = 256;

/// Resource bounds a parser must respect.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    pub max_unpacked_bytes: u64,
    pub max_compression_ratio: u32,
    pub max_pdf_pages: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the file is empty")]
    Empty,
    #[error("no text found in the document")]
    NoText,
    #[error("this looks like binary data, not {expected} text")]
    Binary { expected: &'static str },
    #[error("not valid UTF-8 (first bad byte at offset {offset}); save it as UTF-8 and import again")]
    InvalidUtf8 { offset: usize },
    #[error("the PDF is password-protected; import an unprotected copy")]
    Encrypted,
    #[error("the PDF has {pages} pages, more than the limit of {limit} (ingest.max_pdf_pages)")]
    TooManyPages { pages: usize, limit: u32 },
    #[error("not a readable {format} file: {reason}")]
    Corrupt { format: &'static str, reason: String },
    #[error("{member} would expand beyond the safe limit ({detail}); refusing a possible zip bomb")]
    ArchiveBomb { member: String, detail: String },
    #[error(
        "the {format} nests {what} deeper than {limit} levels; refusing a file built to exhaust the \
         parser (no real document needs this: save it again from its editor)"
    )]
    TooDeep { format: &'static str, what: &'static str, limit: usize },
    #[error(
        "the {format}'s {what} refer to themselves in a loop; refusing a file built to hang the \
         parser (save it again from its editor)"
    )]
    Loop { format: &'static str, what: &'static str },
    #[error("the {format} draws more than {limit} {what}; refusing a file built to hang the parser")]
    TooMany { format: &'static str, what: &'static str, limit: usize },
}

impl ParseError {
    pub(crate) fn corrupt(format: &'static str, reason: impl std::fmt::Display) -> Self {
        ParseError::Corrupt { format, reason: reason.to_string() }
    }
}

/// Parses `bytes` as `format`.
pub fn parse(format: Format, bytes: &[u8], limits: &ParseLimits) -> Result<ParsedDocument, ParseError> {
    if bytes.is_empty() {
        return Err(ParseError::Empty);
    }
    let parsed = match format {
        Format::Markdown => markdown::parse(text::decode(bytes, "Markdown")?)?,
        Format::Text => text::parse(text::decode(bytes, "plain")?),
        Format::Html => html::parse(text::decode(bytes, "HTML")?)?,
        Format::Pdf => pdf::parse(bytes, limits)?,
        Format::Docx => docx::parse(bytes, limits)?,
        Format::Odt => odt::parse(bytes, limits)?,
    };
    if parsed.is_empty() {
        return Err(ParseError::NoText);
    }
    Ok(parsed)
}

/// Accumulates sections while a parser walks a document in reading order.
#[derive(Debug, Default)]
pub(crate) struct SectionBuilder {
    title: Option<String>,
    headings: Vec<(u8, String)>,
    sections: Vec<Section>,
    paragraph: String,
}

impl SectionBuilder {
    /// A heading of `level` (1 = top). The first level-1 heading before any text becomes the
    /// title when the document has none from metadata.
    pub fn heading(&mut self, level: u8, text: &str) {
        self.end_paragraph();
        let text: String = text.chars().filter(|c| !c.is_control() || c.is_whitespace()).collect();
        let text = collapse_whitespace(&text);
        if text.is_empty() {
            return;
        }
        if level == 1 && self.title.is_none() && self.sections.is_empty() && self.headings.is_empty() {
            self.title = Some(text);
            return;
        }
        // A top heading that repeats the title from metadata adds nothing to citations.
        if level == 1 && self.title.as_deref() == Some(text.as_str()) && self.headings.is_empty() {
            return;
        }
        while self.headings.last().is_some_and(|(l, _)| *l >= level) {
            self.headings.pop();
        }
        self.headings.push((level, text));
    }

    pub fn set_title_if_missing(&mut self, title: &str) {
        let title: String = title.chars().filter(|c| !c.is_control() || c.is_whitespace()).collect();
        let title = collapse_whitespace(&title);
        if self.title.is_none() && !title.is_empty() {
            self.title = Some(title);
        }
    }

    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }

    pub fn text(&mut self, text: &str) {
        // Control characters (terminal escape sequences among them) carry no meaning in a
        // passage and would reach terminals and Telegram as they are.
        self.paragraph.extend(text.chars().filter(|c| !c.is_control() || c.is_whitespace()));
    }

    /// Closes the current paragraph; whitespace is collapsed and empty paragraphs dropped.
    pub fn end_paragraph(&mut self) {
        let mut paragraph = collapse_whitespace(&std::mem::take(&mut self.paragraph));
        // Table rows end with a cell separator, and list items can be empty bullets.
        let kept = paragraph.trim_end_matches(['|', ' ']).len();
        paragraph.truncate(kept);
        if paragraph.is_empty() || paragraph == "•" {
            return;
        }
        let path: Vec<String> = self.headings.iter().map(|(_, h)| h.clone()).collect();
        match self.sections.last_mut() {
            Some(section) if section.heading_path == path => section.paragraphs.push(paragraph),
            _ => self.sections.push(Section { heading_path: path, paragraphs: vec![paragraph] }),
        }
    }

    /// Adds a paragraph whose line breaks matter (code, preformatted text).
    pub fn preformatted(&mut self, text: &str) {
        self.end_paragraph();
        let text: String = text.chars().filter(|c| !c.is_control() || matches!(c, '\n' | '\t')).collect();
        let text = text.trim_matches('\n').trim_end();
        if text.trim().is_empty() {
            return;
        }
        let path: Vec<String> = self.headings.iter().map(|(_, h)| h.clone()).collect();
        match self.sections.last_mut() {
            Some(section) if section.heading_path == path => section.paragraphs.push(text.to_owned()),
            _ => self.sections.push(Section { heading_path: path, paragraphs: vec![text.to_owned()] }),
        }
    }

    pub fn finish(mut self) -> ParsedDocument {
        self.end_paragraph();
        ParsedDocument { title: self.title, sections: self.sections, warnings: Vec::new() }
    }
}

/// Collapses runs of whitespace (including non-breaking spaces) to one space and trims; other
/// control characters are dropped.
pub(crate) fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(|c: char| c.is_whitespace() || c == '\u{a0}') {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().filter(|c| !c.is_control()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ParseLimits =
        ParseLimits { max_unpacked_bytes: 1 << 20, max_compression_ratio: 100, max_pdf_pages: 10 };

    #[test]
    fn builder_tracks_nested_headings_and_takes_first_h1_as_title() {
        let mut b = SectionBuilder::default();
        b.heading(1, "Handbook");
        b.heading(2, "Leave");
        b.text("Annual leave is 28 days.");
        b.end_paragraph();
        b.heading(3, "Sick leave");
        b.text("Tell your manager.");
        b.heading(2, "Equipment");
        b.text("IT issues laptops.");
        let doc = b.finish();
        assert_eq!(doc.title.as_deref(), Some("Handbook"));
        let paths: Vec<_> = doc.sections.iter().map(|s| s.heading_path.join(" > ")).collect();
        assert_eq!(paths, ["Leave", "Leave > Sick leave", "Equipment"]);
    }

    #[test]
    fn empty_input_is_refused_for_every_format() {
        for format in [Format::Markdown, Format::Text, Format::Html, Format::Pdf, Format::Docx, Format::Odt] {
            assert_eq!(parse(format, b"", &LIMITS), Err(ParseError::Empty), "{format}");
        }
    }

    #[test]
    fn control_characters_never_reach_a_passage() {
        let text =
            "# Ti\x1b[31mtle\n\nRed \x1b[2Jtext\x07 here, in a paragraph long enough to read as text.\n";
        let doc = parse(Format::Markdown, text.as_bytes(), &LIMITS).unwrap();
        assert_eq!(doc.title.as_deref(), Some("Ti[31mtle"));
        assert_eq!(
            doc.sections[0].paragraphs,
            ["Red [2Jtext here, in a paragraph long enough to read as text."]
        );
    }

    /// A document in `format` whose content nests `depth` levels below the format's wrapper
    /// (html/body, document/body, nothing for Markdown), each level a different construct.
    fn nested(format: Format, depth: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        let mut pick = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        match format {
            Format::Html => {
                let tags = ["div", "section", "article", "blockquote", "span", "em", "aside", "main"];
                let chosen: Vec<&str> = (0..depth).map(|_| tags[pick(tags.len())]).collect();
                let open: String = chosen.iter().map(|t| format!("<{t}>")).collect();
                let close: String = chosen.iter().rev().map(|t| format!("</{t}>")).collect();
                format!("<html><body>{open}Nested text here.{close}</body></html>").into_bytes()
            }
            Format::Markdown => format!("{} Nested text here.\n", ">".repeat(depth)).into_bytes(),
            Format::Docx | Format::Odt => {
                let (member, root, para) = if format == Format::Docx {
                    (
                        "word/document.xml",
                        ("<w:document xmlns:w=\"w\"><w:body>", "</w:body></w:document>"),
                        "w:p",
                    )
                } else {
                    (
                        "content.xml",
                        (
                            "<office:document-content xmlns:office=\"o\" xmlns:text=\"t\"><office:body>",
                            "</office:body></office:document-content>",
                        ),
                        "text:section",
                    )
                };
                let xml = format!(
                    "{}{}<w:r><w:t>Nested text here.</w:t></w:r>{}{}",
                    root.0,
                    format!("<{para}>").repeat(depth),
                    format!("</{para}>").repeat(depth),
                    root.1
                );
                let mut buffer = std::io::Cursor::new(Vec::new());
                let mut zip = zip::ZipWriter::new(&mut buffer);
                let options = zip::write::SimpleFileOptions::default()
                    .compression_method(zip::CompressionMethod::Stored);
                zip.start_file(member, options).unwrap();
                std::io::Write::write_all(&mut zip, xml.as_bytes()).unwrap();
                zip.finish().unwrap();
                buffer.into_inner()
            }
            _ => unreachable!("only tree formats nest"),
        }
    }

    #[test]
    fn any_nesting_is_read_within_the_bound_and_refused_beyond_it() {
        // A property over random depths and constructs: below the bound a document parses (or
        // is refused for something else), beyond it the refusal is TooDeep, never a crash.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for case in 0..240 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let format = [Format::Html, Format::Markdown, Format::Docx, Format::Odt][case % 4];
            let depth = 1 + (seed >> 33) as usize % 1_200;
            if (MAX_NESTING - 6..=MAX_NESTING + 4).contains(&depth) {
                continue; // the wrapper's few levels decide these
            }
            let limits = ParseLimits { max_unpacked_bytes: 64 << 20, ..LIMITS };
            let result = parse(format, &nested(format, depth, seed), &limits);
            if depth > MAX_NESTING {
                assert!(matches!(result, Err(ParseError::TooDeep { .. })), "{format} {depth}: {result:?}");
            } else {
                assert!(!matches!(result, Err(ParseError::TooDeep { .. })), "{format} {depth}: {result:?}");
            }
        }
    }

    #[test]
    fn whitespace_only_text_has_no_text() {
        assert_eq!(parse(Format::Markdown, b"  \n\n\t\n", &LIMITS), Err(ParseError::NoText));
    }
}
