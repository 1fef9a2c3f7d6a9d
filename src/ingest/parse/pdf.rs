//! PDF via pdf-extract (lopdf underneath): text page by page, each page a section so citations
//! can name it. Encrypted files are opened only when they need no password; the page count is
//! checked before extraction; a panic inside the third-party extractor becomes a parse error
//! instead of taking the whole import down.

use std::panic::{AssertUnwindSafe, catch_unwind};

use pdf_extract::{Document, Object, PlainTextOutput, output_doc_page};

use super::text::split_paragraphs;
use super::{ParseError, ParseLimits, ParsedDocument, Section, collapse_whitespace};

const FORMAT: &str = "PDF";

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
