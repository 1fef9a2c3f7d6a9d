//! A BERT-family sentence encoder on candle: weights memory-mapped from safetensors, the
//! model's own tokenizer with padding to the longest text in a batch and truncation at the
//! profile's maximum (the shipped tokenizer.json of MiniLM pads everything to 128), masked mean
//! pooling and L2 normalisation.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::EmbedError;
use super::profile::ModelProfile;

pub(super) struct BertEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl BertEncoder {
    pub fn load(dir: &Path, profile: &ModelProfile, device: Device) -> Result<BertEncoder, EmbedError> {
        let file = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(EmbedError::MissingFile { model: profile.name.clone(), path })
            }
        };
        let config_path = file("config.json")?;
        let weights = file("model.safetensors")?;
        let tokenizer_path = file("tokenizer.json")?;

        let config: Config = serde_json::from_slice(&std::fs::read(&config_path).map_err(EmbedError::load)?)
            .map_err(EmbedError::load)?;
        let mut tokenizer = Tokenizer::from_file(&tokenizer_path).map_err(EmbedError::load)?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: profile.max_tokens, ..Default::default() }))
            .map_err(EmbedError::load)?;
        #[allow(unsafe_code)]
        // SAFETY: the weights file is memory-mapped read-only and must not be modified while
        // Sputnik runs; model files are installed once by models/fetch (or the package) and
        // never written by Sputnik.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device) }
            .map_err(EmbedError::load)?;
        let model = BertModel::load(vb, &config).map_err(EmbedError::load)?;
        Ok(BertEncoder { model, tokenizer, device })
    }

    /// Number of tokens each text becomes (after truncation), for batching by a token budget.
    pub fn token_counts(&self, texts: &[String]) -> Result<Vec<usize>, EmbedError> {
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(EmbedError::inference)?;
        Ok(encodings.iter().map(|e| e.get_attention_mask().iter().filter(|&&m| m == 1).count()).collect())
    }

    /// Token ids of one text as the model sees it (for parity tests and diagnostics).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        let encoding = self.tokenizer.encode(text, true).map_err(EmbedError::inference)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Embeds one batch; every text is encoded together, padded to the longest.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true).map_err(EmbedError::inference)?;
        let batch = encodings.len();
        let length = encodings[0].get_ids().len();
        let mut ids = Vec::with_capacity(batch * length);
        let mut types = Vec::with_capacity(batch * length);
        let mut mask = Vec::with_capacity(batch * length);
        for encoding in &encodings {
            ids.extend_from_slice(encoding.get_ids());
            types.extend_from_slice(encoding.get_type_ids());
            mask.extend_from_slice(encoding.get_attention_mask());
        }
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let ids = Tensor::from_vec(ids, (batch, length), &self.device)?;
            let types = Tensor::from_vec(types, (batch, length), &self.device)?;
            let mask = Tensor::from_vec(mask, (batch, length), &self.device)?;
            let hidden = self.model.forward(&ids, &types, Some(&mask))?;
            // Masked mean over tokens, as sentence-transformers pools.
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
            let mean = summed.broadcast_div(&counts)?;
            let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
            mean.broadcast_div(&norms)?.to_vec2::<f32>()
        };
        run().map_err(EmbedError::inference)
    }
}
