//! PDF via pdf-extract (lopdf underneath): text page by page, each page a section so citations
//! can name it. Encrypted files are opened only when they need no password; the page count is
//! checked before extraction; a panic inside the third-party extractor becomes a parse error
//! instead of taking the whole import down.
//!
//! The extractor follows two object graphs by recursion with no bound of its own: a page's
//! `Parent` chain (for inherited resources) and drawings that draw other drawings (`Do`). A
//! loop in either overflows the stack, which no `catch_unwind` can catch, so both graphs are
//! walked here first, without recursion into the extractor, and a page whose graph loops, nests
//! deeper than [`MAX_NESTING`] or expands into more than [`MAX_DRAWINGS`] drawings is refused.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pdf_extract::content::Content;
use pdf_extract::{Dictionary, Document, Object, ObjectId, PlainTextOutput, Stream, output_doc_page};

use super::text::split_paragraphs;
use super::{MAX_NESTING, ParseError, ParseLimits, ParsedDocument, Section, collapse_whitespace};

const FORMAT: &str = "PDF";

/// How many drawings (XObjects) one page may expand into, repeats counted: a page whose forms
/// each draw the next one twice would otherwise make the extractor's work double per level.
const MAX_DRAWINGS: usize = 10_000;

pub(super) fn parse(bytes: &[u8], limits: &ParseLimits) -> Result<ParsedDocument, ParseError> {
    if !bytes.starts_with(b"%PDF-") && !bytes[..bytes.len().min(1024)].windows(5).any(|w| w == b"%PDF-") {
        return Err(ParseError::corrupt(FORMAT, "no %PDF header"));
    }
    let mut doc = Document::load_mem(bytes).map_err(|e| ParseError::corrupt(FORMAT, e))?;
    if doc.is_encrypted() && doc.decrypt("").is_err() {
        return Err(ParseError::Encrypted);
    }
    let pages = doc.get_pages();
    if pages.len() > limits.max_pdf_pages as usize {
        return Err(ParseError::TooManyPages { pages: pages.len(), limit: limits.max_pdf_pages });
    }
    let title = info_title(&doc);
    let mut texts = Vec::new();
    let mut warnings = Vec::new();
    for &number in pages.keys() {
        match extract_page(&doc, number) {
            Ok(text) => texts.push((number, text)),
            // A page the extractor cannot decode is left out; the rest of the document is read.
            Err(ParseError::Corrupt { reason, .. }) => {
                warnings.push(format!("{reason}; the page was skipped"))
            }
            Err(e) => return Err(e),
        }
    }
    if texts.is_empty() && !warnings.is_empty() {
        return Err(ParseError::corrupt(FORMAT, "no page could be decoded"));
    }
    let running = running_lines(texts.iter().map(|(_, text)| text.as_str()));
    let mut sections = Vec::new();
    for (number, text) in texts {
        let text = join_hyphenated(&drop_lines(&text, &running));
        let paragraphs: Vec<String> =
            split_paragraphs(&text).map(|p| collapse_whitespace(&p)).filter(|p| !p.is_empty()).collect();
        if paragraphs.is_empty() {
            continue;
        }
        let mut paragraphs = paragraphs.into_iter();
        // A sentence running on from the previous page is finished there, where it started.
        if let Some(last) = sections.last_mut().and_then(|s: &mut Section| s.paragraphs.last_mut())
            && runs_on(last)
            && let Some(first) = paragraphs.next()
        {
            let hyphenated = join_hyphenated(&format!("{last}\n{first}"));
            *last = hyphenated.replace('\n', " ");
        }
        let paragraphs: Vec<String> = paragraphs.collect();
        if !paragraphs.is_empty() {
            sections.push(Section { heading_path: vec![format!("p. {number}")], paragraphs });
        }
    }
    Ok(ParsedDocument { title, sections, warnings })
}

/// Whether a paragraph ending a page stops mid-sentence: long enough not to be a heading, and
/// ending in a word, a number or a comma rather than a sentence's end.
fn runs_on(paragraph: &str) -> bool {
    paragraph.chars().count() >= 60
        && paragraph
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || matches!(c, ',' | '-' | '—' | '–'))
}

/// A line with its page numbers (arabic or roman) and surrounding space taken out, lowercased:
/// how a running header or footer looks the same on every page.
fn line_key(line: &str) -> String {
    let words: Vec<&str> = line
        .split_whitespace()
        .filter(|w| {
            let w = w.trim_matches(|c: char| !c.is_alphanumeric());
            !w.is_empty()
                && !w.chars().all(|c| c.is_ascii_digit())
                && !w.chars().all(|c| matches!(c.to_ascii_lowercase(), 'i' | 'v' | 'x' | 'l' | 'c'))
        })
        .collect();
    words.join(" ").to_lowercase()
}

/// How many lines at the top and at the bottom of a page can be running headers and footers.
const EDGE_LINES: usize = 3;

/// Running headers and footers: lines near the top or bottom of a page that recur, page numbers
/// aside, on at least half of the pages (of three or more). Bare page numbers are included.
fn running_lines<'a>(pages: impl Iterator<Item = &'a str>) -> std::collections::HashSet<String> {
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut total = 0usize;
    for page in pages {
        total += 1;
        let lines: Vec<&str> = page.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let mut edges: Vec<String> = lines
            .iter()
            .take(EDGE_LINES)
            .chain(lines.iter().rev().take(EDGE_LINES))
            .map(|l| line_key(l))
            .collect();
        edges.sort();
        edges.dedup();
        for key in edges {
            *counts.entry(key).or_default() += 1;
        }
    }
    let mut running: std::collections::HashSet<String> = counts
        .into_iter()
        .filter(|(key, n)| !key.is_empty() && total >= 3 && *n * 2 >= total)
        .map(|(key, _)| key)
        .collect();
    running.insert(String::new());
    running
}

/// `page` without its running lines (those at its top and bottom whose key is in `running`).
fn drop_lines(page: &str, running: &std::collections::HashSet<String>) -> String {
    let lines: Vec<&str> = page.lines().collect();
    let content: Vec<usize> = (0..lines.len()).filter(|&i| !lines[i].trim().is_empty()).collect();
    let edge: std::collections::HashSet<usize> =
        content.iter().take(EDGE_LINES).chain(content.iter().rev().take(EDGE_LINES)).copied().collect();
    lines
        .iter()
        .enumerate()
        .filter(|(i, line)| {
            !(edge.contains(i) && !line.trim().is_empty() && running.contains(&line_key(line)))
        })
        .map(|(_, line)| *line)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Joins words hyphenated at line ends ("разработчи-\nка" → "разработчика"): a letter, a hyphen
/// ending the line, and a lowercase letter opening the next.
fn join_hyphenated(text: &str) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = String::with_capacity(text.len());
    let mut joined = false;
    for (i, raw) in lines.iter().enumerate() {
        let line = if joined { raw.trim_start() } else { raw };
        let trimmed = line.trim_end();
        let next_lower = lines
            .get(i + 1)
            .and_then(|next| next.trim_start().chars().next())
            .is_some_and(char::is_lowercase);
        let mut tail = trimmed.chars().rev();
        let last = tail.next();
        joined = matches!(last, Some('-' | '\u{00AD}'))
            && tail.next().is_some_and(char::is_alphabetic)
            && next_lower;
        if let (true, Some(hyphen)) = (joined, last) {
            out.push_str(&trimmed[..trimmed.len() - hyphen.len_utf8()]);
        } else {
            out.push_str(line);
            if i + 1 < lines.len() {
                out.push('\n');
            }
        }
    }
    out
}

fn extract_page(doc: &Document, number: u32) -> Result<String, ParseError> {
    if let Some(&page) = doc.get_pages().get(&number) {
        check_page_graph(doc, page)?;
    }
    let mut text = String::new();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let mut output = PlainTextOutput::new(&mut text);
        output_doc_page(doc, &mut output, number)
    }));
    match outcome {
        Ok(Ok(())) => Ok(text),
        Ok(Err(e)) => Err(ParseError::corrupt(FORMAT, format!("page {number}: {e}"))),
        Err(_) => Err(ParseError::corrupt(FORMAT, format!("page {number} could not be decoded"))),
    }
}

/// Walks what the extractor will walk for one page, iteratively or with bounded recursion, and
/// says which graph breaks a bound.
fn check_page_graph(doc: &Document, page: ObjectId) -> Result<(), ParseError> {
    let Ok(mut node) = doc.get_dictionary(page) else {
        return Ok(());
    };
    let mut resources = None;
    let mut chain = vec![page];
    loop {
        if resources.is_none() {
            resources = dictionary_at(doc, node, b"Resources");
        }
        let Some(parent) = node.get(b"Parent").ok().and_then(|p| p.as_reference().ok()) else {
            break;
        };
        if chain.contains(&parent) {
            return Err(ParseError::Loop { format: FORMAT, what: "page tree parents" });
        }
        if chain.len() >= MAX_NESTING {
            return Err(ParseError::TooDeep {
                format: FORMAT,
                what: "page tree parents",
                limit: MAX_NESTING,
            });
        }
        chain.push(parent);
        match doc.get_dictionary(parent) {
            Ok(dict) => node = dict,
            Err(_) => break,
        }
    }
    let content = doc.get_page_content(page).unwrap_or_default();
    let mut budget = MAX_DRAWINGS;
    check_drawings(doc, &content, resources, &mut Vec::new(), &mut budget)
}

/// The drawings `content` draws with `Do`, looked up in `resources` as the extractor does, and
/// theirs in turn; `path` holds the drawings being drawn, outermost first.
fn check_drawings<'a>(
    doc: &'a Document,
    content: &[u8],
    resources: Option<&'a Dictionary>,
    path: &mut Vec<Option<ObjectId>>,
    budget: &mut usize,
) -> Result<(), ParseError> {
    // Content the decoder refuses is reported by the extractor itself.
    let Ok(content) = Content::decode(content) else {
        return Ok(());
    };
    for operation in content.operations.iter().filter(|op| op.operator == "Do") {
        let Some(name) = operation.operands.first().and_then(|o| o.as_name().ok()) else {
            continue;
        };
        let Some(xobjects) = resources.and_then(|r| dictionary_at(doc, r, b"XObject")) else {
            continue;
        };
        let Some((id, Object::Stream(drawing))) =
            xobjects.get(name).ok().and_then(|x| doc.dereference(x).ok())
        else {
            continue;
        };
        if id.is_some() && path.contains(&id) {
            return Err(ParseError::Loop { format: FORMAT, what: "drawings (XObjects)" });
        }
        if path.len() >= MAX_NESTING {
            return Err(ParseError::TooDeep {
                format: FORMAT,
                what: "drawings (XObjects)",
                limit: MAX_NESTING,
            });
        }
        *budget = budget.checked_sub(1).ok_or(ParseError::TooMany {
            format: FORMAT,
            what: "drawings (XObjects) on one page",
            limit: MAX_DRAWINGS,
        })?;
        let inner = dictionary_at(doc, &drawing.dict, b"Resources").or(resources);
        path.push(id);
        check_drawings(doc, &stream_content(drawing), inner, path, budget)?;
        path.pop();
    }
    Ok(())
}

/// The dictionary `dict[key]` holds, directly or by reference.
fn dictionary_at<'a>(doc: &'a Document, dict: &'a Dictionary, key: &[u8]) -> Option<&'a Dictionary> {
    let value = dict.get(key).ok()?;
    doc.dereference(value).ok()?.1.as_dict().ok()
}

/// A stream's content as the extractor reads it: decompressed when its filters allow.
fn stream_content(stream: &Stream) -> Vec<u8> {
    if stream.filters().is_ok() {
        stream.decompressed_content().unwrap_or_else(|_| stream.content.clone())
    } else {
        stream.content.clone()
    }
}

/// The Title entry of the document information dictionary, decoded from PDFDocEncoding or UTF-16.
fn info_title(doc: &Document) -> Option<String> {
    let info = doc.trailer.get(b"Info").ok()?;
    let info = match info {
        Object::Reference(id) => doc.get_object(*id).ok()?,
        other => other,
    };
    let Object::String(raw, _) = info.as_dict().ok()?.get(b"Title").ok()? else {
        return None;
    };
    let title = decode_text_string(raw);
    let title = collapse_whitespace(&title);
    (!title.is_empty()).then_some(title)
}

fn decode_text_string(raw: &[u8]) -> String {
    if let Some(utf16) = raw.strip_prefix(&[0xFE, 0xFF]) {
        let units: Vec<u16> = utf16.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        return String::from_utf16_lossy(&units);
    }
    if let Some(utf8) = raw.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
        return String::from_utf8_lossy(utf8).into_owned();
    }
    raw.iter().map(|&b| b as char).collect()
}

#[cfg(test)]
mod tests {
    use pdf_extract::{Dictionary, Document, Object, ObjectId, Stream};

    use super::*;

    const LIMITS: ParseLimits =
        ParseLimits { max_unpacked_bytes: 1 << 20, max_compression_ratio: 100, max_pdf_pages: 10 };

    fn dict(entries: Vec<(&str, Object)>) -> Dictionary {
        let mut dict = Dictionary::new();
        for (key, value) in entries {
            dict.set(key, value);
        }
        dict
    }

    /// One page saying "Hello" and drawing the form X, whose content is `form`; `parents` makes
    /// the page's Parent chain go through two extra nodes that point at each other.
    fn pdf(form: &[u8], parent_loop: bool) -> Vec<u8> {
        let mut doc = Document::with_version("1.5");
        let pages: ObjectId = doc.new_object_id();
        let form_id: ObjectId = doc.new_object_id();
        let font = doc.add_object(dict(vec![
            ("Type", Object::Name(b"Font".to_vec())),
            ("Subtype", Object::Name(b"Type1".to_vec())),
            ("BaseFont", Object::Name(b"Courier".to_vec())),
        ]));
        let resources = dict(vec![
            ("Font", Object::Dictionary(dict(vec![("F1", Object::Reference(font))]))),
            ("XObject", Object::Dictionary(dict(vec![("X", Object::Reference(form_id))]))),
        ]);
        let form_dict = dict(vec![
            ("Type", Object::Name(b"XObject".to_vec())),
            ("Subtype", Object::Name(b"Form".to_vec())),
            ("BBox", Object::Array(vec![0.into(), 0.into(), 100.into(), 100.into()])),
            ("Resources", Object::Dictionary(resources.clone())),
        ]);
        doc.objects.insert(form_id, Object::Stream(Stream::new(form_dict, form.to_vec())));
        let content = doc.add_object(Stream::new(
            Dictionary::new(),
            b"BT /F1 12 Tf 10 700 Td (Hello from the page) Tj ET /X Do".to_vec(),
        ));
        let mut page = dict(vec![
            ("Type", Object::Name(b"Page".to_vec())),
            ("Contents", Object::Reference(content)),
            ("MediaBox", Object::Array(vec![0.into(), 0.into(), 595.into(), 842.into()])),
        ]);
        if parent_loop {
            let (a, b) = (doc.new_object_id(), doc.new_object_id());
            doc.objects.insert(a, Object::Dictionary(dict(vec![("Parent", Object::Reference(b))])));
            doc.objects.insert(b, Object::Dictionary(dict(vec![("Parent", Object::Reference(a))])));
            page.set("Parent", Object::Reference(a));
        } else {
            page.set("Parent", Object::Reference(pages));
            page.set("Resources", Object::Dictionary(resources));
        }
        let page = doc.add_object(page);
        doc.objects.insert(
            pages,
            Object::Dictionary(dict(vec![
                ("Type", Object::Name(b"Pages".to_vec())),
                ("Kids", Object::Array(vec![Object::Reference(page)])),
                ("Count", Object::Integer(1)),
            ])),
        );
        let catalog = doc.add_object(dict(vec![
            ("Type", Object::Name(b"Catalog".to_vec())),
            ("Pages", Object::Reference(pages)),
        ]));
        doc.trailer.set("Root", Object::Reference(catalog));
        let mut bytes = Vec::new();
        doc.save_to(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn a_drawing_that_draws_itself_is_refused_not_a_stack_overflow() {
        // pdf-extract recurses into every `Do` with no bound: this page aborted the process.
        let refused = parse(&pdf(b"/X Do", false), &LIMITS).unwrap_err();
        assert!(matches!(refused, ParseError::Loop { format: "PDF", .. }), "{refused}");
    }

    #[test]
    fn a_page_whose_parents_loop_is_refused_not_a_stack_overflow() {
        let refused = parse(&pdf(b"", true), &LIMITS).unwrap_err();
        assert!(matches!(refused, ParseError::Loop { format: "PDF", .. }), "{refused}");
    }

    #[test]
    fn running_headers_and_page_numbers_are_dropped_and_hyphenated_words_joined() {
        let pages: Vec<String> = (1..=4)
            .map(|n| {
                format!(
                    "Руководство начинающего разработчика Debian {}\n\n{} собирает разработчи-\nка команда {}, а well-\nKnown {} остаётся.\n\n{n}\n",
                    ["i", "ii", "iii", "iv"][n - 1],
                    ["Пакет", "Архив", "Файл", "Образ"][n - 1],
                    ["dpkg", "tar", "cp", "dd"][n - 1],
                    ["один", "два", "три", "четыре"][n - 1]
                )
            })
            .collect();
        let running = running_lines(pages.iter().map(String::as_str));
        let page = join_hyphenated(&drop_lines(&pages[1], &running));
        assert!(!page.contains("Руководство") && !page.trim_end().ends_with('2'), "{page}");
        assert!(page.contains("Архив собирает разработчика команда tar"), "{page}");
        assert!(page.contains("well-\nKnown"), "a capital after the hyphen is not a split word: {page}");
        // Two pages are too few to tell a running header from the text.
        let running = running_lines(pages[..2].iter().map(String::as_str));
        let first = drop_lines(&pages[0], &running);
        assert!(first.contains("Руководство"), "{first:?} {running:?}");
    }

    #[test]
    fn an_ordinary_drawing_is_read() {
        let doc = parse(&pdf(b"BT /F1 12 Tf 10 600 Td (Hello from the form) Tj ET", false), &LIMITS).unwrap();
        let text = doc.sections.iter().flat_map(|s| &s.paragraphs).cloned().collect::<Vec<_>>().join(" ");
        assert!(text.contains("Hello from the page") && text.contains("Hello from the form"), "{text}");
    }
}
