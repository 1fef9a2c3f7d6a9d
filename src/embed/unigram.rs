//! A compact SentencePiece-unigram tokenizer for XLM-R vocabularies (multilingual-e5-small).
//!
//! It reads the same tokenizer.json that Hugging Face tokenizers loads, but holds the 250k-piece
//! vocabulary in a finite-state transducer (tantivy's, built at load: 2.6 MB) beside its
//! scores, instead of tokenizers' trie of hash maps (≈ 286 MB resident for this vocabulary —
//! more than the rest of Sputnik together). It
//! follows the reference engine step by step: each code point is normalised on its own through
//! the precompiled charsmap (spm_precompiled, the crate tokenizers uses), runs of spaces collapse,
//! the metaspace marker is prepended and replaces spaces, and one Viterbi pass picks the pieces,
//! with one `<unk>` per character outside the vocabulary. `<s>` and `</s>` surround the text and
//! the content is cut so the whole fits the model's maximum.

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
    /// Every piece's text to its id (the first, where the vocabulary repeats a piece).
    pieces: tantivy_fst::Map<Vec<u8>>,
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
        let scores: Vec<f32> = vocab.iter().map(|&(_, score)| score as f32).collect();
        let lowest = vocab
            .iter()
            .enumerate()
            .filter(|&(id, _)| id as u32 != unk)
            .map(|(_, &(_, score))| score)
            .fold(f64::INFINITY, f64::min);
        // The transducer takes its keys in byte order, each once: a repeated piece keeps its
        // first id.
        let mut keys: Vec<(&str, u64)> =
            vocab.iter().enumerate().map(|(id, (piece, _))| (piece.as_str(), id as u64)).collect();
        keys.sort_unstable();
        keys.dedup_by(|next, first| next.0 == first.0);
        let invalid =
            |e: tantivy_fst::Error| EmbedError::Load(format!("{}: vocabulary: {e}", path.display()));
        let mut builder = tantivy_fst::MapBuilder::memory();
        for &(piece, id) in &keys {
            builder.insert(piece, id).map_err(invalid)?;
        }
        let pieces = tantivy_fst::Map::from_bytes(builder.into_inner().map_err(invalid)?).map_err(invalid)?;
        let id = |token: &str| {
            pieces
                .get(token)
                .map(|id| id as u32)
                .ok_or_else(|| EmbedError::Load(format!("{}: the vocabulary lacks {token}", path.display())))
        };
        let (bos, eos, pad) = (id("<s>")?, id("</s>")?, id("<pad>")?);
        Ok(UnigramTokenizer {
            charsmap,
            scores,
            pieces,
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
        let fst = self.pieces.as_fst();
        for i in 0..n {
            if best[i] == f32::NEG_INFINITY {
                continue;
            }
            // The pieces that start at character i: one walk down the transducer along the
            // text's bytes, a piece wherever a character ends on a final state, until no piece
            // goes on. (A hash lookup of every span up to the longest piece's length, in a map
            // of 250k pieces, took 4 % of an import's samples; the walk takes a quarter of that.)
            let (mut node, mut output, mut e) = (fst.root(), tantivy_fst::raw::Output::zero(), i + 1);
            for (at, &byte) in bytes.as_bytes().iter().enumerate().skip(starts[i]) {
                let Some(next) = node.find_input(byte) else { break };
                let transition = node.transition(next);
                (node, output) = (fst.node(transition.addr), output.cat(transition.out));
                if at + 1 < starts[e] {
                    continue;
                }
                if node.is_final() {
                    let id = output.cat(node.final_output()).value() as u32;
                    let score = best[i] + self.scores[id as usize];
                    if id != self.unk && score > best[e] {
                        (best[e], piece[e], from[e]) = (score, Some(id), i);
                    }
                }
                e += 1;
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
