//! The values kept in the store. They are serialised as JSON so that later schema versions can
//! add fields with defaults without rewriting every record.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DocumentId(pub u64);

impl std::fmt::Display for DocumentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Language of a document's text, as detected at import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Ru,
    En,
}

impl Language {
    pub fn code(self) -> &'static str {
        match self {
            Language::Ru => "ru",
            Language::En => "en",
        }
    }
}

impl std::fmt::Display for Language {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// File format a document was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Markdown,
    Text,
    Html,
    Pdf,
    Docx,
    Odt,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Markdown => "markdown",
            Format::Text => "text",
            Format::Html => "html",
            Format::Pdf => "pdf",
            Format::Docx => "docx",
            Format::Odt => "odt",
        }
    }

    /// The format a file name's extension announces, if Sputnik reads it.
    pub fn from_path(path: &std::path::Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "md" | "markdown" => Format::Markdown,
            "txt" | "text" => Format::Text,
            "html" | "htm" => Format::Html,
            "pdf" => Format::Pdf,
            "docx" => Format::Docx,
            "odt" => Format::Odt,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Identity of a document: the directory it was imported from and its path inside it. The
/// relative path is what people see and what evaluation files refer to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceKey<'a> {
    pub root: &'a str,
    pub source: &'a str,
}

impl SourceKey<'_> {
    pub fn encoded(&self) -> String {
        // U+001F (unit separator) does not occur in real file names, so it keeps the parts apart.
        format!("{}\u{1f}{}", self.root, self.source)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentRecord {
    pub id: DocumentId,
    /// Absolute directory the document was imported from.
    pub root: String,
    /// Path relative to `root`, with `/` separators.
    pub source: String,
    pub title: String,
    pub language: Language,
    /// Access groups; empty means every employee may see it.
    pub groups: Vec<String>,
    /// blake3 of the file's bytes.
    pub content_hash: String,
    /// Parser and chunker settings the chunks were made with; a change re-chunks the file.
    pub pipeline: String,
    pub format: Format,
    pub size: u64,
    /// Unix seconds of the first import, and of the last change.
    pub imported_at: i64,
    pub updated_at: i64,
    pub chunk_count: u32,
}

impl DocumentRecord {
    pub fn source_key(&self) -> SourceKey<'_> {
        SourceKey { root: &self.root, source: &self.source }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub ordinal: u32,
    /// Headings above this chunk, outermost first, not including the document title.
    pub heading_path: Vec<String>,
    pub text: String,
    /// Byte range of the chunk in the document's extracted text.
    pub start: u64,
    pub end: u64,
    /// Estimated token count.
    pub tokens: u32,
}

/// A parsed document ready to be written: everything but the id the store assigns.
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub root: String,
    pub source: String,
    pub title: String,
    pub language: Language,
    pub groups: Vec<String>,
    pub content_hash: String,
    pub pipeline: String,
    pub format: Format,
    pub size: u64,
    pub updated_at: i64,
    pub chunks: Vec<ChunkRecord>,
}

impl NewDocument {
    pub fn source_key(&self) -> SourceKey<'_> {
        SourceKey { root: &self.root, source: &self.source }
    }

    pub(super) fn into_record(self, id: DocumentId, imported_at: i64) -> (DocumentRecord, Vec<ChunkRecord>) {
        let record = DocumentRecord {
            id,
            root: self.root,
            source: self.source,
            title: self.title,
            language: self.language,
            groups: self.groups,
            content_hash: self.content_hash,
            pipeline: self.pipeline,
            format: self.format,
            size: self.size,
            imported_at,
            updated_at: self.updated_at,
            chunk_count: self.chunks.len() as u32,
        };
        (record, self.chunks)
    }
}
