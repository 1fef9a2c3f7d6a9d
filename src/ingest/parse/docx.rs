//! DOCX (Office Open XML): paragraphs of word/document.xml; headings recognised by their style
//! (named "heading N" / "Title" in word/styles.xml, whatever the style id's language) or by an
//! outline level; title from docProps/core.xml when set.

use std::collections::HashMap;

use super::zipped::{Archive, XmlEvent, attribute, first_element_text, local_name, walk_xml};
use super::{ParseError, ParseLimits, ParsedDocument, SectionBuilder};

const FORMAT: &str = "DOCX";

/// What a paragraph style means for structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StyleRole {
    Title,
    Heading(u8),
}

pub(super) fn parse(bytes: &[u8], limits: &ParseLimits) -> Result<ParsedDocument, ParseError> {
    let mut archive = Archive::open(bytes, FORMAT, limits)?;
    let document = archive
        .text("word/document.xml")?
        .ok_or_else(|| ParseError::corrupt(FORMAT, "word/document.xml is missing"))?;
    let styles = match archive.text("word/styles.xml")? {
        Some(xml) => style_roles(&xml)?,
        None => HashMap::new(),
    };
    let mut builder = SectionBuilder::default();
    if let Some(title) =
        archive.text("docProps/core.xml")?.and_then(|xml| first_element_text(&xml, FORMAT, "title"))
    {
        builder.set_title_if_missing(&title);
    }

    let mut paragraph = String::new();
    let mut role: Option<StyleRole> = None;
    let mut in_text = false;
    walk_xml(&document, FORMAT, |event| match event {
        XmlEvent::Start(e) if local_name(e) == "t" => in_text = true,
        XmlEvent::Start(e) | XmlEvent::Empty(e) => match local_name(e) {
            "p" => {
                paragraph.clear();
                role = None;
            }
            "pStyle" => role = attribute(e, "val").and_then(|id| styles.get(&id).copied()).or(role),
            "outlineLvl" => {
                if let Some(level) = attribute(e, "val").and_then(|v| v.parse::<u8>().ok()) {
                    role = role.or(Some(StyleRole::Heading(level.saturating_add(1).min(9))));
                }
            }
            "tab" => paragraph.push('\t'),
            "br" | "cr" => paragraph.push(' '),
            _ => {}
        },
        XmlEvent::End(name) => match name {
            "t" => in_text = false,
            "p" => {
                match role {
                    Some(StyleRole::Title) => builder.set_title_if_missing(&paragraph),
                    Some(StyleRole::Heading(level)) => builder.heading(level, &paragraph),
                    None => {
                        builder.text(&paragraph);
                        builder.end_paragraph();
                    }
                }
                paragraph.clear();
                role = None;
            }
            _ => {}
        },
        XmlEvent::Text(text) if in_text => paragraph.push_str(text),
        XmlEvent::Text(_) => {}
    })?;
    Ok(builder.finish())
}

/// Maps style ids to structural roles using each style's English name and outline level.
fn style_roles(xml: &str) -> Result<HashMap<String, StyleRole>, ParseError> {
    let mut roles = HashMap::new();
    let mut current: Option<String> = None;
    walk_xml(xml, FORMAT, |event| match event {
        XmlEvent::Start(e) if local_name(e) == "style" => current = attribute(e, "styleId"),
        XmlEvent::Start(e) | XmlEvent::Empty(e) => {
            let Some(id) = current.clone() else { return };
            match local_name(e) {
                "name" => {
                    let name = attribute(e, "val").unwrap_or_default().to_lowercase();
                    if name == "title" {
                        roles.insert(id, StyleRole::Title);
                    } else if let Some(level) =
                        name.strip_prefix("heading ").and_then(|n| n.trim().parse::<u8>().ok())
                    {
                        roles.insert(id, StyleRole::Heading(level));
                    }
                }
                "outlineLvl" => {
                    if let Some(level) = attribute(e, "val").and_then(|v| v.parse::<u8>().ok()) {
                        roles.entry(id).or_insert(StyleRole::Heading(level.saturating_add(1).min(9)));
                    }
                }
                _ => {}
            }
        }
        XmlEvent::End("style") => current = None,
        _ => {}
    })?;
    Ok(roles)
}
