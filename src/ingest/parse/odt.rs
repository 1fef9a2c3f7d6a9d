//! ODT (OpenDocument text): text:h headings with their outline level, text:p paragraphs, list
//! items as bullets; the title from meta.xml when set.

use super::zipped::{Archive, XmlEvent, attribute, first_element_text, local_name, walk_xml};
use super::{ParseError, ParseLimits, ParsedDocument, SectionBuilder};

const FORMAT: &str = "ODT";

pub(super) fn parse(bytes: &[u8], limits: &ParseLimits) -> Result<ParsedDocument, ParseError> {
    let mut archive = Archive::open(bytes, FORMAT, limits)?;
    let content =
        archive.text("content.xml")?.ok_or_else(|| ParseError::corrupt(FORMAT, "content.xml is missing"))?;
    let mut builder = SectionBuilder::default();
    if let Some(title) = archive.text("meta.xml")?.and_then(|xml| first_element_text(&xml, FORMAT, "title")) {
        builder.set_title_if_missing(&title);
    }

    // Depth of elements whose text is not body text (annotations, notes' citations).
    let mut skipped = 0usize;
    let mut in_body = false;
    let mut heading: Option<(u8, String)> = None;
    walk_xml(&content, FORMAT, |event| match event {
        XmlEvent::Start(e) => match local_name(e) {
            "text" => in_body = true,
            "annotation" | "note-citation" | "tracked-changes" => skipped += 1,
            "h" => {
                builder.end_paragraph();
                let level = attribute(e, "outline-level").and_then(|v| v.parse().ok()).unwrap_or(1);
                heading = Some((level, String::new()));
            }
            "p" => builder.end_paragraph(),
            "list-item" => {
                builder.end_paragraph();
                builder.text("• ");
            }
            _ => {}
        },
        XmlEvent::Empty(e) if skipped == 0 => {
            let gap = match local_name(e) {
                "s" => " ".repeat(attribute(e, "c").and_then(|c| c.parse().ok()).unwrap_or(1usize).min(64)),
                "tab" => "\t".to_owned(),
                "line-break" => " ".to_owned(),
                _ => return,
            };
            match heading.as_mut() {
                Some((_, h)) => h.push_str(&gap),
                None => builder.text(&gap),
            }
        }
        XmlEvent::End(name) => match name {
            "annotation" | "note-citation" | "tracked-changes" => skipped = skipped.saturating_sub(1),
            "h" => {
                if let Some((level, text)) = heading.take() {
                    builder.heading(level, &text);
                }
            }
            "p" => builder.end_paragraph(),
            _ => {}
        },
        XmlEvent::Text(text) if in_body && skipped == 0 => match heading.as_mut() {
            Some((_, h)) => h.push_str(text),
            None => builder.text(text),
        },
        _ => {}
    })?;
    Ok(builder.finish())
}
