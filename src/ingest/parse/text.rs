//! Plain text: UTF-8 only, paragraphs separated by blank lines, the first short line as title.

use super::{ParseError, ParsedDocument, Section, collapse_whitespace};

/// Decodes UTF-8 (a BOM is dropped), telling binary data apart from text in another encoding.
pub(super) fn decode<'a>(bytes: &'a [u8], expected: &'static str) -> Result<&'a str, ParseError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if looks_binary(bytes) {
        return Err(ParseError::Binary { expected });
    }
    std::str::from_utf8(bytes).map_err(|e| ParseError::InvalidUtf8 { offset: e.valid_up_to() })
}

/// NUL bytes, or many control characters, in the first few KiB: no text format has those.
fn looks_binary(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(8192)];
    if head.contains(&0) {
        return true;
    }
    let controls = head.iter().filter(|&&b| b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0c)).count();
    controls * 20 > head.len()
}

pub(super) fn parse(text: &str) -> ParsedDocument {
    let paragraphs: Vec<String> = split_paragraphs(text).collect();
    let mut title = None;
    let mut rest = paragraphs.as_slice();
    if let Some(first) = paragraphs.first() {
        let first_line = first.lines().next().unwrap_or_default().trim();
        // A short first line standing alone reads as a title.
        if !first.contains('\n') && first_line.chars().count() <= 100 && paragraphs.len() > 1 {
            title = Some(collapse_whitespace(first_line));
            rest = &paragraphs[1..];
        }
    }
    let paragraphs: Vec<String> = rest.iter().map(|p| collapse_whitespace(p)).collect();
    ParsedDocument {
        title,
        sections: vec![Section { heading_path: vec![], paragraphs }],
        warnings: Vec::new(),
    }
}

/// Paragraphs are separated by blank lines (also form feeds, which PDF extraction emits).
pub(super) fn split_paragraphs(text: &str) -> impl Iterator<Item = String> + '_ {
    let mut current = String::new();
    let mut lines = text.split(['\n', '\u{c}']).map(|l| l.trim_end_matches('\r')).peekable();
    std::iter::from_fn(move || {
        loop {
            match lines.next() {
                Some(line) if line.trim().is_empty() => {
                    if !current.trim().is_empty() {
                        return Some(std::mem::take(&mut current));
                    }
                }
                Some(line) => {
                    if !current.is_empty() {
                        current.push('\n');
                    }
                    current.push_str(line.trim());
                }
                None => {
                    if current.trim().is_empty() {
                        return None;
                    }
                    return Some(std::mem::take(&mut current));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn title_and_paragraphs() {
        let doc = parse("Office hours\n\nThe office opens at 9.\nIt closes at 19.\n\n\nParking is free.\n");
        assert_eq!(doc.title.as_deref(), Some("Office hours"));
        assert_eq!(
            doc.sections[0].paragraphs,
            ["The office opens at 9. It closes at 19.", "Parking is free."]
        );
    }

    #[test]
    fn binary_and_bad_encoding_are_told_apart() {
        assert_eq!(
            decode(b"PK\x03\x04\x00\x00binary", "Markdown"),
            Err(ParseError::Binary { expected: "Markdown" })
        );
        // "Привет" in Windows-1251.
        assert_eq!(
            decode(b"ok \xcf\xf0\xe8\xe2\xe5\xf2", "plain"),
            Err(ParseError::InvalidUtf8 { offset: 3 })
        );
        assert_eq!(decode("\u{feff}да".as_bytes(), "plain"), Ok("да"));
    }
}
