//! Every document parser and the chunker on arbitrary bytes: no panic, no hang, limits hold.
//! The first byte picks the format.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sputnik::ingest::chunk::{ChunkSizes, Estimate, chunk_document};
use sputnik::ingest::parse::{ParseLimits, parse};
use sputnik::store::Format;

const FORMATS: [Format; 6] =
    [Format::Markdown, Format::Text, Format::Html, Format::Pdf, Format::Docx, Format::Odt];

fuzz_target!(|data: &[u8]| {
    // pdf-extract panics on some broken files; Sputnik catches that (src/ingest/parse/pdf.rs)
    // and reports the file as unreadable. libFuzzer's hook would abort on the caught panic too,
    // so it is replaced by a silent one: a panic that escapes still aborts the run (the harness
    // checks for it) and leaves the input in fuzz/artifacts.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Some((&pick, bytes)) = data.split_first() else { return };
    let format = FORMATS[pick as usize % FORMATS.len()];
    // Small limits, so a decompression bomb is refused quickly rather than unpacked.
    let limits = ParseLimits { max_unpacked_bytes: 4 << 20, max_compression_ratio: 100, max_pdf_pages: 50 };
    if let Ok(parsed) = parse(format, bytes, &limits) {
        let sizes = ChunkSizes { target_tokens: 60, max_tokens: 80, overlap_tokens: 10 };
        let chunks = chunk_document(&parsed, sizes, &Estimate);
        for chunk in &chunks {
            assert!(chunk.tokens <= 80 * 2, "a chunk far over its limit: {}", chunk.tokens);
            assert!(!chunk.text.trim().is_empty(), "an empty chunk");
        }
    }
});
