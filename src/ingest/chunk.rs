//! Heading-aware chunking. A chunk never crosses a section boundary, so its heading path is
//! exact. Within a section paragraphs are packed up to a target size; a paragraph that is too
//! large is split at sentence ends, and a sentence that is still too large at word boundaries.
//! Consecutive chunks of one section share a little overlap so an answer spanning the cut is
//! still found.
//!
//! Sizes are counted in the embedding model's own tokens when a model is configured (Russian
//! takes about twice as many pieces per word as English in e5's vocabulary, so a word-based
//! estimate overflows the model's window for Russian); without one they are estimated (words ×
//! 4/3, the usual ratio for BERT-style vocabularies).

use unicode_segmentation::UnicodeSegmentation;

use super::parse::ParsedDocument;
use crate::embed::estimate_tokens;
use crate::store::ChunkRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSizes {
    pub target_tokens: usize,
    pub max_tokens: usize,
    pub overlap_tokens: usize,
}

/// Counts the tokens of a text: the model's tokenizer, or [`Estimate`].
pub trait TokenCounter: Sync {
    fn count(&self, text: &str) -> usize;
    /// Names the counting in the import pipeline's fingerprint: documents chunked by another
    /// counting are chunked again on the next import.
    fn name(&self) -> &str;
}

/// The word-based estimate, for knowledge bases without a model.
#[derive(Debug)]
pub struct Estimate;

impl TokenCounter for Estimate {
    fn count(&self, text: &str) -> usize {
        estimate_tokens(text)
    }
    fn name(&self) -> &str {
        "estimate"
    }
}

impl TokenCounter for crate::embed::Embedder {
    fn count(&self, text: &str) -> usize {
        self.count_tokens(text)
    }
    fn name(&self) -> &str {
        &self.profile().name
    }
}

/// Splits a parsed document into chunks. `start`/`end` are byte offsets into the document's
/// extracted text: sections' paragraphs joined by blank lines, in order.
pub fn chunk_document(
    doc: &ParsedDocument,
    sizes: ChunkSizes,
    counter: &dyn TokenCounter,
) -> Vec<ChunkRecord> {
    let mut chunks = Vec::new();
    let mut offset = 0usize;
    for section in &doc.sections {
        // Units are (text, byte offset in the extracted text), each no larger than max_tokens.
        let mut units: Vec<(String, usize)> = Vec::new();
        for paragraph in &section.paragraphs {
            split_to_fit(paragraph, offset, sizes.max_tokens, counter, &mut units);
            offset += paragraph.len() + 2;
        }
        let units: Vec<(String, usize, usize)> = units
            .into_iter()
            .map(|(text, at)| (counter.count(&text), text, at))
            .map(|(n, t, a)| (t, a, n))
            .collect();
        pack_section(&units, &section.heading_path, sizes, &mut chunks);
    }
    chunks
}

/// A piece of a section: its text, its byte offset in the extracted text, its tokens.
type Unit = (String, usize, usize);

fn pack_section(units: &[Unit], heading_path: &[String], sizes: ChunkSizes, out: &mut Vec<ChunkRecord>) {
    let mut current: Vec<&Unit> = Vec::new();
    let mut tokens = 0usize;
    let mut fresh = 0usize; // units in `current` that are not overlap from the previous chunk
    for unit in units {
        let unit_tokens = unit.2;
        let full = tokens >= sizes.target_tokens || tokens + unit_tokens > sizes.max_tokens;
        if fresh > 0 && full {
            out.push(make_chunk(out.len(), heading_path, &current));
            let overlap = overlap_tail(&current, sizes.overlap_tokens, unit_tokens, sizes.max_tokens);
            current = current.split_off(current.len() - overlap);
            tokens = current.iter().map(|u| u.2).sum();
            fresh = 0;
        }
        current.push(unit);
        tokens += unit_tokens;
        fresh += 1;
    }
    if fresh > 0 {
        out.push(make_chunk(out.len(), heading_path, &current));
    }
}

/// How many trailing units of a finished chunk to repeat: as many as fit in the overlap budget
/// while leaving room for the next unit.
fn overlap_tail(units: &[&Unit], budget: usize, next_tokens: usize, max: usize) -> usize {
    let mut taken = 0;
    let mut tokens = 0;
    for unit in units.iter().rev() {
        let t = unit.2;
        if tokens + t > budget || tokens + t + next_tokens > max || taken + 1 == units.len() {
            break;
        }
        tokens += t;
        taken += 1;
    }
    taken
}

fn make_chunk(ordinal: usize, heading_path: &[String], units: &[&Unit]) -> ChunkRecord {
    let text = units.iter().map(|u| u.0.as_str()).collect::<Vec<_>>().join("\n\n");
    let start = units.first().map_or(0, |u| u.1);
    let end = units.last().map_or(0, |u| u.1 + u.0.len());
    ChunkRecord {
        ordinal: ordinal as u32,
        heading_path: heading_path.to_vec(),
        // Units are counted alone; joined they are the same pieces (the tokenizers split at
        // whitespace first).
        tokens: units.iter().map(|u| u.2).sum::<usize>() as u32,
        text,
        start: start as u64,
        end: end as u64,
    }
}

/// Pushes `paragraph` as one unit if it fits, else its sentences (merged back up while they
/// fit), and words for any sentence that is still too long.
fn split_to_fit(
    paragraph: &str,
    offset: usize,
    max_tokens: usize,
    counter: &dyn TokenCounter,
    out: &mut Vec<(String, usize)>,
) {
    if counter.count(paragraph) <= max_tokens {
        out.push((paragraph.to_owned(), offset));
        return;
    }
    // Sentences are packed into pieces of at most half the maximum so that several pieces
    // can share a chunk and overlap stays possible.
    let piece_limit = (max_tokens / 2).max(1);
    let mut piece = String::new();
    let mut piece_tokens = 0;
    let mut piece_start = offset;
    let flush = |piece: &mut String, start: usize, out: &mut Vec<(String, usize)>| {
        let trimmed = piece.trim();
        if !trimmed.is_empty() {
            out.push((trimmed.to_owned(), start));
        }
        piece.clear();
    };
    for (at, sentence) in paragraph.split_sentence_bound_indices() {
        let sentence_tokens = counter.count(sentence);
        if sentence_tokens > piece_limit {
            flush(&mut piece, piece_start, out);
            piece_tokens = 0;
            split_words(sentence, offset + at, piece_limit, counter, out);
            piece_start = offset + at + sentence.len();
            continue;
        }
        if piece_tokens + sentence_tokens > piece_limit {
            flush(&mut piece, piece_start, out);
            piece_tokens = 0;
            piece_start = offset + at;
        }
        if piece.is_empty() {
            piece_start = offset + at;
        }
        piece.push_str(sentence);
        piece_tokens += sentence_tokens;
    }
    flush(&mut piece, piece_start, out);
}

/// Cuts a sentence too long for one piece at word boundaries, each piece within `limit_tokens`
/// (a single word longer than that stays whole: the model truncates it).
fn split_words(
    sentence: &str,
    offset: usize,
    limit_tokens: usize,
    counter: &dyn TokenCounter,
    out: &mut Vec<(String, usize)>,
) {
    let words: Vec<(usize, &str)> =
        sentence.split_word_bound_indices().filter(|(_, w)| !w.trim().is_empty()).collect();
    // The piece so far is counted whole (words counted alone would each round up).
    let mut first: Option<usize> = None;
    let mut end = 0;
    for &(at, word) in &words {
        match first {
            Some(start) if counter.count(&sentence[start..at + word.len()]) > limit_tokens => {
                out.push((sentence[start..end].to_owned(), offset + start));
                first = Some(at);
            }
            Some(_) => {}
            None => first = Some(at),
        }
        end = at + word.len();
    }
    if let Some(start) = first {
        out.push((sentence[start..end].to_owned(), offset + start));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::parse::Section;

    const SIZES: ChunkSizes = ChunkSizes { target_tokens: 30, max_tokens: 40, overlap_tokens: 8 };

    fn doc(sections: Vec<(Vec<&str>, Vec<String>)>) -> ParsedDocument {
        ParsedDocument {
            warnings: Vec::new(),
            title: Some("T".into()),
            sections: sections
                .into_iter()
                .map(|(path, paragraphs)| Section {
                    heading_path: path.into_iter().map(String::from).collect(),
                    paragraphs,
                })
                .collect(),
        }
    }

    fn words(n: usize, word: &str) -> String {
        vec![word; n].join(" ") + "."
    }

    #[test]
    fn chunks_never_cross_sections_and_keep_heading_paths() {
        let d = doc(vec![(vec!["A"], vec![words(5, "alpha")]), (vec!["A", "B"], vec![words(5, "beta")])]);
        let chunks = chunk_document(&d, SIZES, &Estimate);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].heading_path, ["A"]);
        assert_eq!(chunks[1].heading_path, ["A", "B"]);
        assert_eq!(chunks[1].ordinal, 1);
    }

    #[test]
    fn every_chunk_respects_the_maximum_and_all_text_is_kept() {
        let long_sentence = words(100, "gamma");
        let paragraphs = vec![words(10, "one"), words(20, "two"), long_sentence.clone(), words(12, "three")];
        let d = doc(vec![(vec!["S"], paragraphs)]);
        let chunks = chunk_document(&d, SIZES, &Estimate);
        for c in &chunks {
            assert!(c.tokens as usize <= SIZES.max_tokens, "{} tokens: {}", c.tokens, c.text);
        }
        let all: String = chunks.iter().map(|c| c.text.as_str()).collect::<Vec<_>>().join(" ");
        for word in ["one", "two", "gamma", "three"] {
            assert!(all.contains(word), "{word} lost");
        }
        let gammas: usize = chunks.iter().map(|c| c.text.matches("gamma").count()).sum();
        assert!(gammas >= 100, "words of the long sentence were lost: {gammas}");
    }

    #[test]
    fn consecutive_chunks_overlap_and_offsets_point_into_the_text() {
        let paragraphs: Vec<String> = (0..8).map(|i| format!("Sentence number {i} is here.")).collect();
        let text = paragraphs.join("\n\n");
        let d = doc(vec![(vec![], paragraphs)]);
        let chunks = chunk_document(
            &d,
            ChunkSizes { target_tokens: 12, max_tokens: 20, overlap_tokens: 7 },
            &Estimate,
        );
        assert!(chunks.len() > 2);
        for pair in chunks.windows(2) {
            let last_of_first = pair[0].text.split("\n\n").last().unwrap();
            assert!(
                pair[1].text.starts_with(last_of_first),
                "no overlap between {:?} and {:?}",
                pair[0].text,
                pair[1].text
            );
        }
        for c in &chunks {
            let span = &text[c.start as usize..c.end as usize];
            assert!(span.starts_with(c.text.split("\n\n").next().unwrap()));
        }
    }
}
