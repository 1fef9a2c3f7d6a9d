//! Shared by the office formats: bounded reading of archive members and a small XML event loop.
//! Archive members are checked against the declared *and* the actual expanded size, since a
//! hostile file can lie in its headers.

use std::io::{Cursor, Read};

use quick_xml::events::{BytesStart, Event};

use super::{ParseError, ParseLimits};

pub(super) struct Archive<'a> {
    zip: zip::ZipArchive<Cursor<&'a [u8]>>,
    format: &'static str,
    limits: ParseLimits,
}

impl<'a> Archive<'a> {
    pub fn open(bytes: &'a [u8], format: &'static str, limits: &ParseLimits) -> Result<Self, ParseError> {
        let zip = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| ParseError::corrupt(format, format!("not a valid archive ({e})")))?;
        Ok(Archive { zip, format, limits: *limits })
    }

    /// Reads a member as UTF-8; `Ok(None)` when the archive has no such member.
    pub fn text(&mut self, name: &str) -> Result<Option<String>, ParseError> {
        let format = self.format;
        let limits = self.limits;
        let mut member = match self.zip.by_name(name) {
            Ok(member) => member,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(ParseError::corrupt(format, format!("cannot read {name} ({e})"))),
        };
        let compressed = member.compressed_size().max(1);
        let bomb = |detail: String| ParseError::ArchiveBomb { member: name.to_owned(), detail };
        let ratio_ok = |size: u64| size / compressed <= u64::from(limits.max_compression_ratio);
        if member.size() > limits.max_unpacked_bytes {
            return Err(bomb(format!(
                "declares {} bytes, limit {}",
                member.size(),
                limits.max_unpacked_bytes
            )));
        }
        if !ratio_ok(member.size()) {
            return Err(bomb(format!(
                "ratio {}:1, limit {}:1",
                member.size() / compressed,
                limits.max_compression_ratio
            )));
        }
        let mut bytes = Vec::new();
        (&mut member)
            .take(limits.max_unpacked_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ParseError::corrupt(format, format!("cannot unpack {name} ({e})")))?;
        let size = bytes.len() as u64;
        if size > limits.max_unpacked_bytes || !ratio_ok(size) {
            return Err(bomb(format!("expands to over {size} bytes from {compressed}")));
        }
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| ParseError::corrupt(format, format!("{name} is not UTF-8 XML")))
    }
}

/// An XML event with entity references already resolved into text.
pub(super) enum XmlEvent<'a> {
    Start(&'a BytesStart<'a>),
    Empty(&'a BytesStart<'a>),
    End(&'a str),
    Text(&'a str),
}

/// Walks `xml`, calling `visit` for each element and text run; local names only (no prefixes).
pub(super) fn walk_xml(
    xml: &str,
    format: &'static str,
    mut visit: impl FnMut(XmlEvent<'_>),
) -> Result<(), ParseError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    // The reader streams and keeps no tree, but what reads its events may keep a stack per
    // level: the same bound as every other document tree.
    let mut depth = 0usize;
    loop {
        let event = reader.read_event().map_err(|e| {
            ParseError::corrupt(format, format!("malformed XML at byte {} ({e})", reader.buffer_position()))
        })?;
        match event {
            Event::Start(e) => {
                depth += 1;
                if depth > super::MAX_NESTING {
                    return Err(ParseError::TooDeep {
                        format,
                        what: "XML elements",
                        limit: super::MAX_NESTING,
                    });
                }
                visit(XmlEvent::Start(&e))
            }
            Event::Empty(e) => visit(XmlEvent::Empty(&e)),
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                visit(XmlEvent::End(e.local_name().into_inner()))
            }
            Event::Text(t) => visit(XmlEvent::Text(&t.xml10_content())),
            Event::CData(t) => visit(XmlEvent::Text(&t)),
            Event::GeneralRef(r) => {
                let entity = format!("&{};", r.xml10_content());
                if let Ok(text) = quick_xml::escape::unescape(&entity) {
                    visit(XmlEvent::Text(&text));
                }
            }
            Event::Eof => return Ok(()),
            _ => {}
        }
    }
}

pub(super) fn local_name<'a>(e: &'a BytesStart<'_>) -> &'a str {
    e.local_name().into_inner()
}

/// The value of the attribute with this local name, whatever its namespace prefix.
pub(super) fn attribute(e: &BytesStart<'_>, local: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.local_name().into_inner() == local)
        .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok().map(|v| v.into_owned()))
}

/// The text of the first element with this local name (dc:title in document metadata).
pub(super) fn first_element_text(xml: &str, format: &'static str, local: &str) -> Option<String> {
    let mut depth = 0usize;
    let mut text = String::new();
    let mut done = false;
    walk_xml(xml, format, |event| match event {
        XmlEvent::Start(e) if !done && local_name(e) == local => depth += 1,
        XmlEvent::End(name) if depth > 0 && name == local => {
            depth -= 1;
            done = true;
        }
        XmlEvent::Text(t) if depth > 0 => text.push_str(t),
        _ => {}
    })
    .ok()?;
    let text = super::collapse_whitespace(&text);
    (!text.is_empty()).then_some(text)
}
