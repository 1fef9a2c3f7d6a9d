//! `[ingest]`: what an import accepts and how it cuts documents into passages.

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::setting::{Invalid, refuse};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSettings {
    /// Files larger than this are refused before they are read.
    pub max_file_size: ByteSize,
    /// Most bytes one DOCX/ODT part may expand to; protects against zip bombs.
    pub max_unpacked_size: ByteSize,
    /// Largest expansion ratio (uncompressed / compressed) accepted for an archive member.
    pub max_compression_ratio: u32,
    /// PDFs with more pages than this are refused.
    pub max_pdf_pages: u32,
    /// Chunks aim for this many tokens (estimated) ...
    pub chunk_target_tokens: usize,
    /// ... and never exceed this many.
    pub chunk_max_tokens: usize,
    /// Tokens of trailing context repeated at the start of the next chunk of the same section.
    pub chunk_overlap_tokens: usize,
    /// Glob patterns (relative to the imported directory); when set, only matching files import.
    pub include: Vec<String>,
    /// Glob patterns of files to leave out.
    pub exclude: Vec<String>,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            max_file_size: ByteSize::mib(20),
            max_unpacked_size: ByteSize::mib(64),
            max_compression_ratio: 100,
            max_pdf_pages: 2000,
            chunk_target_tokens: 300,
            chunk_max_tokens: 400,
            chunk_overlap_tokens: 40,
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

impl IngestSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.max_file_size.as_u64() == 0 {
            return refuse("ingest.max_file_size", "must be greater than zero");
        }
        if self.max_compression_ratio < 2 {
            return refuse("ingest.max_compression_ratio", "must be at least 2");
        }
        if self.chunk_max_tokens < 32 {
            return refuse("ingest.chunk_max_tokens", "must be at least 32");
        }
        if self.chunk_target_tokens == 0 || self.chunk_target_tokens > self.chunk_max_tokens {
            return refuse(
                "ingest.chunk_target_tokens",
                format!("must be between 1 and chunk_max_tokens ({})", self.chunk_max_tokens),
            );
        }
        if self.chunk_overlap_tokens * 2 > self.chunk_target_tokens {
            return refuse(
                "ingest.chunk_overlap_tokens",
                format!("must be at most half of chunk_target_tokens ({})", self.chunk_target_tokens),
            );
        }
        for (key, patterns) in [("ingest.include", &self.include), ("ingest.exclude", &self.exclude)] {
            for pattern in patterns {
                if let Err(e) = globset::Glob::new(pattern) {
                    return refuse(key, format!("has an invalid glob {pattern:?}: {e}"));
                }
            }
        }
        Ok(())
    }
}
