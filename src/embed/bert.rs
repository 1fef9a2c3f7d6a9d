//! A BERT sentence encoder on candle with f32 weights memory-mapped from safetensors (MiniLM).
//! Tokenisation and pooling are shared with the other encoders (see `tokens`); the shipped
//! tokenizer.json of MiniLM pads everything to 128, which `ModelTokenizer` overrides.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

use super::EmbedError;
use super::profile::ModelProfile;
use super::tokens::{Batch, ModelTokenizer, mean_pool};

pub(super) struct BertEncoder {
    model: BertModel,
    tokenizer: std::sync::Arc<ModelTokenizer>,
    device: Device,
}

impl BertEncoder {
    pub fn load(dir: &Path, profile: &ModelProfile, device: Device) -> Result<BertEncoder, EmbedError> {
        let file = |name: &str| super::model_file(dir, profile, name);
        let config_path = file("config.json")?;
        let weights = file("model.safetensors")?;
        let tokenizer_path = file("tokenizer.json")?;

        let config: Config = serde_json::from_slice(&std::fs::read(&config_path).map_err(EmbedError::load)?)
            .map_err(EmbedError::load)?;
        let tokenizer = std::sync::Arc::new(ModelTokenizer::load(&tokenizer_path, profile)?);
        #[allow(unsafe_code)]
        // SAFETY: the weights file is memory-mapped read-only and must not be modified while
        // Sputnik runs; model files are installed once by models/fetch (or the package) and
        // never written by Sputnik.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &device) }
            .map_err(EmbedError::load)?;
        let model = BertModel::load(vb, &config).map_err(EmbedError::load)?;
        Ok(BertEncoder { model, tokenizer, device })
    }

    pub fn tokenizer(&self) -> &std::sync::Arc<ModelTokenizer> {
        &self.tokenizer
    }

    /// Embeds one batch of encoded texts, padded to the longest.
    pub(super) fn embed_batch(&self, batch: &Batch) -> Result<Vec<Vec<f32>>, EmbedError> {
        if batch.batch == 0 {
            return Ok(Vec::new());
        }
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let shape = (batch.batch, batch.length);
            let ids = Tensor::from_vec(batch.ids.clone(), shape, &self.device)?;
            let types = Tensor::from_vec(batch.types.clone(), shape, &self.device)?;
            let mask = batch.mask_tensor(&self.device)?;
            let hidden = self.model.forward(&ids, &types, Some(&mask))?;
            mean_pool(&hidden, &mask)
        };
        run().map_err(EmbedError::inference)
    }
}
