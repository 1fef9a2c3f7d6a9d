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
    let mut sections = Vec::new();
    for &number in pages.keys() {
        let text = extract_page(&doc, number)?;
        let paragraphs: Vec<String> =
            split_paragraphs(&text).map(|p| collapse_whitespace(&p)).filter(|p| !p.is_empty()).collect();
        if !paragraphs.is_empty() {
            sections.push(Section { heading_path: vec![format!("p. {number}")], paragraphs });
        }
    }
    Ok(ParsedDocument { title, sections })
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
    fn an_ordinary_drawing_is_read() {
        let doc = parse(&pdf(b"BT /F1 12 Tf 10 600 Td (Hello from the form) Tj ET", false), &LIMITS).unwrap();
        let text = doc.sections.iter().flat_map(|s| &s.paragraphs).cloned().collect::<Vec<_>>().join(" ");
        assert!(text.contains("Hello from the page") && text.contains("Hello from the form"), "{text}");
    }
}
