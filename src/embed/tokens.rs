//! What every encoder shares: the model's own tokenizer with padding to the longest text of a
//! batch and truncation at the profile's maximum, and masked mean pooling with L2 normalisation.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
#[cfg(feature = "minilm")]
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::EmbedError;
use super::profile::ModelProfile;
use super::unigram::UnigramTokenizer;

/// One batch as the model takes it: ids, segment ids and attention mask, each `batch × length`.
pub(super) struct Batch {
    pub ids: Vec<u32>,
    /// Segment ids: read by the BERT encoder (MiniLM) only; XLM-R's are all 0.
    #[cfg_attr(not(feature = "minilm"), allow(dead_code))]
    pub types: Vec<u32>,
    pub mask: Vec<u32>,
    pub batch: usize,
    pub length: usize,
}

pub(super) enum ModelTokenizer {
    /// Hugging Face tokenizers with the file's whole pipeline (WordPiece for MiniLM).
    #[cfg(feature = "minilm")]
    Hf(Box<Tokenizer>),
    /// The compact unigram tokenizer for XLM-R vocabularies (see `unigram`).
    Unigram { tokenizer: UnigramTokenizer, max_tokens: usize },
}

impl ModelTokenizer {
    pub fn load_unigram(path: &Path, profile: &ModelProfile) -> Result<ModelTokenizer, EmbedError> {
        Ok(ModelTokenizer::Unigram {
            tokenizer: UnigramTokenizer::load(path)?,
            max_tokens: profile.max_tokens,
        })
    }

    #[cfg(feature = "minilm")]
    pub fn load(path: &Path, profile: &ModelProfile) -> Result<ModelTokenizer, EmbedError> {
        let mut tokenizer = Tokenizer::from_file(path).map_err(EmbedError::load)?;
        // The padding token's id differs between vocabularies ([PAD] = 0 in BERT's, <pad> = 1 in
        // XLM-R's); padded positions are masked out either way.
        let (pad_id, pad_token) = ["[PAD]", "<pad>"]
            .into_iter()
            .find_map(|t| tokenizer.token_to_id(t).map(|id| (id, t.to_owned())))
            .unwrap_or((0, "[PAD]".to_owned()));
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            pad_id,
            pad_token,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: profile.max_tokens, ..Default::default() }))
            .map_err(EmbedError::load)?;
        Ok(ModelTokenizer::Hf(Box::new(tokenizer)))
    }

    /// How many pieces `text` becomes, without the special tokens and without truncation.
    pub fn count(&self, text: &str) -> usize {
        match self {
            #[cfg(feature = "minilm")]
            ModelTokenizer::Hf(tokenizer) => {
                tokenizer.encode_fast(text, false).map_or_else(|_| estimate_tokens(text), |e| e.len())
            }
            ModelTokenizer::Unigram { tokenizer, .. } => tokenizer.pieces(text).len(),
        }
    }

    /// Token ids of one text as the model sees it: special tokens added, truncated at the
    /// model's maximum. Callers encode passages on their own thread ([`super::Embedder`]).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        match self {
            #[cfg(feature = "minilm")]
            ModelTokenizer::Hf(tokenizer) => {
                let encoding = tokenizer.encode(text, true).map_err(EmbedError::inference)?;
                Ok(encoding.get_ids().to_vec())
            }
            ModelTokenizer::Unigram { tokenizer, max_tokens } => Ok(tokenizer.encode(text, *max_tokens)),
        }
    }

    /// Encodes texts together, padded to the longest.
    pub fn batch(&self, texts: &[String]) -> Result<Batch, EmbedError> {
        let encoded = texts.iter().map(|t| self.token_ids(t)).collect::<Result<Vec<_>, _>>()?;
        Ok(self.batch_of(&encoded.iter().map(Vec::as_slice).collect::<Vec<_>>()))
    }

    /// Texts already encoded ([`Self::token_ids`]) as one batch, padded to the longest. Every
    /// text is a single sequence, so its segment ids are all 0.
    pub fn batch_of(&self, encoded: &[&[u32]]) -> Batch {
        let pad = match self {
            #[cfg(feature = "minilm")]
            ModelTokenizer::Hf(tokenizer) => tokenizer.get_padding().map_or(0, |p| p.pad_id),
            ModelTokenizer::Unigram { tokenizer, .. } => tokenizer.pad,
        };
        let length = encoded.iter().map(|ids| ids.len()).max().unwrap_or(0);
        let mut out = Batch {
            ids: Vec::with_capacity(encoded.len() * length),
            types: vec![0; encoded.len() * length],
            mask: Vec::with_capacity(encoded.len() * length),
            batch: encoded.len(),
            length,
        };
        for ids in encoded {
            let padding = length - ids.len();
            out.mask.extend(std::iter::repeat_n(1, ids.len()).chain(std::iter::repeat_n(0, padding)));
            out.ids.extend_from_slice(ids);
            out.ids.extend(std::iter::repeat_n(pad, padding));
        }
        out
    }
}

impl Batch {
    pub fn mask_tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        Tensor::from_vec(self.mask.clone(), (self.batch, self.length), device)
    }
}

/// Masked mean over tokens (as sentence-transformers pools), then L2 normalisation.
/// `hidden` is `batch × length × dim`, `mask` is `batch × length` of 0/1.
pub(super) fn mean_pool(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    mean.broadcast_div(&norms)?.to_vec2::<f32>()
}

/// Estimated model tokens in `text` from its words, for when no tokenizer is at hand (a
/// knowledge base without a model, or text the tokenizer refuses).
pub fn estimate_tokens(text: &str) -> usize {
    let words = text.split_whitespace().count();
    (words * 4).div_ceil(3)
}
