//! A compact SentencePiece-unigram tokenizer for XLM-R vocabularies (multilingual-e5-small).
//!
//! It reads the same tokenizer.json that Hugging Face tokenizers loads, but holds the 250k-piece
//! vocabulary in one hash map with its scores (≈ 20 MB) instead of tokenizers' trie of hash maps
//! (≈ 286 MB resident for this vocabulary — more than the rest of Sputnik together). It
//! follows the reference engine step by step: each code point is normalised on its own through
//! the precompiled charsmap (spm_precompiled, the crate tokenizers uses), runs of spaces collapse,
//! the metaspace marker is prepended and replaces spaces, and one Viterbi pass picks the pieces,
//! with one `<unk>` per character outside the vocabulary. `<s>` and `</s>` surround the text and
//! the content is cut so the whole fits the model's maximum.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use spm_precompiled::Precompiled;

use super::EmbedError;

const METASPACE: char = '\u{2581}';
/// SentencePiece's penalty for an unknown character, below the lowest piece score.
const UNKNOWN_PENALTY: f64 = 10.0;

#[derive(Deserialize)]
struct TokenizerFile {
    normalizer: NormalizerSequence,
    model: UnigramModel,
}

#[derive(Deserialize)]
struct NormalizerSequence {
    normalizers: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct UnigramModel {
    #[serde(rename = "type")]
    kind: String,
    unk_id: u32,
    vocab: Vec<(String, f64)>,
}

pub(super) struct UnigramTokenizer {
    charsmap: Precompiled,
    scores: Vec<f32>,
    index: HashMap<Box<str>, u32>,
    longest_piece: usize,
    unk: u32,
    unk_score: f32,
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
}

impl UnigramTokenizer {
    pub fn load(path: &Path) -> Result<UnigramTokenizer, EmbedError> {
        let file = std::fs::File::open(path).map_err(EmbedError::load)?;
        let parsed: TokenizerFile = serde_json::from_reader(std::io::BufReader::new(file))
            .map_err(|e| EmbedError::Load(format!("{}: {e}", path.display())))?;
        if parsed.model.kind != "Unigram" {
            return Err(EmbedError::Load(format!("{}: not a Unigram tokenizer", path.display())));
        }
        let charsmap = parsed
            .normalizer
            .normalizers
            .into_iter()
            .find(|n| n.get("type").and_then(|t| t.as_str()) == Some("Precompiled"))
            .ok_or_else(|| EmbedError::Load(format!("{}: no precompiled charsmap", path.display())))
            // Its deserialiser borrows the base64 text, which a JSON string (not a Value) allows.
            .and_then(|n| {
                serde_json::from_str::<Precompiled>(&n.to_string()).map_err(|_| {
                    EmbedError::Load(format!("{}: invalid precompiled charsmap", path.display()))
                })
            })?;
        let vocab = parsed.model.vocab;
        let unk = parsed.model.unk_id;
        let mut scores = Vec::with_capacity(vocab.len());
        let mut index = HashMap::with_capacity(vocab.len());
        let mut lowest = f64::INFINITY;
        let mut longest_piece = 1;
        for (id, (piece, score)) in vocab.into_iter().enumerate() {
            scores.push(score as f32);
            longest_piece = longest_piece.max(piece.len());
            if id as u32 != unk {
                lowest = lowest.min(score);
            }
            index.entry(piece.into_boxed_str()).or_insert(id as u32);
        }
        let id = |token: &str| {
            index
                .get(token)
                .copied()
                .ok_or_else(|| EmbedError::Load(format!("{}: the vocabulary lacks {token}", path.display())))
        };
        let (bos, eos, pad) = (id("<s>")?, id("</s>")?, id("<pad>")?);
        Ok(UnigramTokenizer {
            charsmap,
            scores,
            index,
            longest_piece,
            unk,
            unk_score: (lowest - UNKNOWN_PENALTY) as f32,
            bos,
            eos,
            pad,
        })
    }

    /// The text as the pieces see it: normalised code point by code point, space runs
    /// collapsed, a metaspace in front, spaces replaced by metaspaces.
    fn normalise(&self, text: &str) -> Vec<char> {
        let mut chars: Vec<char> = Vec::with_capacity(text.len() + 1);
        let mut buffer = [0u8; 4];
        for c in text.chars() {
            match self.charsmap.transform(c.encode_utf8(&mut buffer)) {
                Some(replacement) => chars.extend(replacement.chars()),
                None => chars.push(c),
            }
        }
        chars.dedup_by(|next, previous| *next == ' ' && *previous == ' ');
        if chars.first() != Some(&' ') {
            chars.insert(0, METASPACE);
        }
        for c in &mut chars {
            if *c == ' ' {
                *c = METASPACE;
            }
        }
        chars
    }

    /// Content token ids (no `<s>` / `</s>`), the best segmentation by piece scores.
    pub fn pieces(&self, text: &str) -> Vec<u32> {
        let chars = self.normalise(text);
        let mut bytes = String::with_capacity(chars.len() * 3);
        let mut starts = Vec::with_capacity(chars.len() + 1);
        for &c in &chars {
            starts.push(bytes.len());
            bytes.push(c);
        }
        starts.push(bytes.len());
        let n = chars.len();
        // best[e]: score of the best segmentation of the first e characters, reached by piece
        // `piece[e]` (None: unknown character) starting at character `from[e]`.
        let mut best = vec![f32::NEG_INFINITY; n + 1];
        let mut piece: Vec<Option<u32>> = vec![None; n + 1];
        let mut from = vec![0usize; n + 1];
        best[0] = 0.0;
        for i in 0..n {
            if best[i] == f32::NEG_INFINITY {
                continue;
            }
            for e in i + 1..=n {
                let span = &bytes[starts[i]..starts[e]];
                if span.len() > self.longest_piece {
                    break;
                }
                if let Some(&id) = self.index.get(span)
                    && id != self.unk
                {
                    let score = best[i] + self.scores[id as usize];
                    if score > best[e] {
                        (best[e], piece[e], from[e]) = (score, Some(id), i);
                    }
                }
            }
            let score = best[i] + self.unk_score;
            if score > best[i + 1] {
                (best[i + 1], piece[i + 1], from[i + 1]) = (score, None, i);
            }
        }
        let mut ids = Vec::new();
        let mut at = n;
        while at > 0 {
            ids.push(piece[at].unwrap_or(self.unk));
            at = from[at];
        }
        ids.reverse();
        ids
    }

    /// Token ids as the model takes them: `<s>`, at most `max_tokens - 2` pieces, `</s>`.
    pub fn encode(&self, text: &str, max_tokens: usize) -> Vec<u32> {
        let mut pieces = self.pieces(text);
        pieces.truncate(max_tokens.saturating_sub(2));
        let mut ids = Vec::with_capacity(pieces.len() + 2);
        ids.push(self.bos);
        ids.extend(pieces);
        ids.push(self.eos);
        ids
    }
}
