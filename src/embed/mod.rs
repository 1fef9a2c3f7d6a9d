//! Local sentence embeddings. The model runs on one dedicated inference thread that owns it;
//! callers send texts over a channel and wait for vectors, so inference never runs on an async
//! runtime and two callers never fight over the model. Passages are batched by a token budget
//! (texts of similar length together, so padding wastes little); query embeddings are cached in
//! an LRU with hit and miss counters. Questions go ahead of passages: they come on a channel of
//! their own that the thread serves before each job and between the batches of a long one, so an
//! employee's question waits for at most one batch of an import, not the whole document.
//!
//! Models load from a directory on disk only (see `models/fetch`); their profiles come from
//! [`profile::ModelProfile`].

#[cfg(feature = "minilm")]
mod bert;
pub mod profile;
mod quantized;
mod settings;
mod tokens;
mod unigram;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use lru::LruCache;

pub use profile::ModelProfile;
pub use settings::EmbedSettings;
pub use tokens::estimate_tokens;

/// Most tokens (batch size × longest text) one padded forward pass may hold; bounds peak memory.
const BATCH_TOKEN_BUDGET: usize = 8192;
/// Most tokens forward passes without padding (the CPU's plain-slice encoder) may hold at once
/// (two side by side hold half each): their buffers take about 15 KiB per token (19 MiB at this
/// budget), and a batch is what a waiting question may have to wait for. It holds a document of
/// four 256-token chunks, or five one-chunk documents together (an import's files queue up
/// behind each other); 2,048 took an import of the 10k-chunk corpus from under to over its
/// 300 MiB bound once files shared batches.
const PLAIN_TOKEN_BUDGET: usize = 1280;
/// Most attention scores per head (batch size × longest text²) one forward pass may hold. The
/// scores grow with the square of the length: 16 texts of 512 tokens held 200 MB of them per
/// copy (12 heads), and an import peaked at 510 MiB; with this bound a copy is 24 MiB.
const BATCH_ATTENTION_BUDGET: usize = 1 << 19;
const MAX_BATCH: usize = 32;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    #[error("unknown embedding model {name:?} (known: {known}; or \"none\" to turn semantic search off)")]
    UnknownModel { name: String, known: String },
    #[error(
        "embedding model {model} is not installed in {dir}: run `models/fetch {model}` (or set embed.models_dir)"
    )]
    NotInstalled { model: String, dir: PathBuf },
    #[error("embedding model {model} is incomplete: {path} is missing; run `models/fetch {model}` again")]
    MissingFile { model: String, path: PathBuf },
    #[error("cannot load the embedding model: {0}")]
    Load(String),
    #[error("embedding failed: {0}")]
    Inference(String),
    #[error(
        "embed.device = \"cuda\" but this build has no CUDA support; rebuild with `--features cuda` or use \"cpu\""
    )]
    NoCudaSupport,
    #[error("cannot use the CUDA device: {0}")]
    Cuda(String),
    #[error("the embedding thread stopped")]
    Stopped,
}

impl EmbedError {
    fn load(e: impl std::fmt::Display) -> Self {
        EmbedError::Load(first_line(&e))
    }

    fn inference(e: impl std::fmt::Display) -> Self {
        EmbedError::Inference(first_line(&e))
    }

    pub fn is_user_error(&self) -> bool {
        !matches!(self, EmbedError::Inference(_) | EmbedError::Stopped)
    }
}

/// A file of an installed model, or the error that says to fetch it again.
fn model_file(dir: &Path, profile: &ModelProfile, name: &str) -> Result<PathBuf, EmbedError> {
    let path = dir.join(name);
    if path.is_file() { Ok(path) } else { Err(EmbedError::MissingFile { model: profile.name.clone(), path }) }
}

/// candle appends a captured backtrace to its messages when RUST_BACKTRACE is set; a person
/// needs the cause, not the stack.
fn first_line(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    text.lines().next().unwrap_or_default().trim().to_owned()
}

/// An embedding vector, L2-normalised.
pub type Embedding = Arc<[f32]>;

/// Where an embedding job's vectors go.
type EmbedReply = mpsc::Sender<Result<Vec<Vec<f32>>, EmbedError>>;

enum Job {
    Embed {
        texts: Vec<String>,
        reply: EmbedReply,
    },
    /// A question is waiting on the urgent channel (wakes a thread that is idle).
    Wake,
}

/// A question to embed ahead of passages.
struct Urgent {
    text: String,
    reply: mpsc::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
}

/// Cache counters, for stats and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

/// Passages sent with [`Embedder::submit_passages`], on their way through the inference thread.
#[derive(Debug)]
pub struct PendingEmbeddings(mpsc::Receiver<Result<Vec<Vec<f32>>, EmbedError>>);

impl PendingEmbeddings {
    /// Waits for the passages' vectors, in the order they were submitted.
    pub fn wait(self) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.0.recv().map_err(|_| EmbedError::Stopped)?
    }
}

/// Handle to the inference thread.
pub struct Embedder {
    profile: &'static ModelProfile,
    /// The model's tokenizer, shared with the inference thread: chunk sizes are counted in it.
    tokenizer: Arc<tokens::ModelTokenizer>,
    jobs: Option<mpsc::Sender<Job>>,
    urgent: mpsc::Sender<Urgent>,
    worker: Option<JoinHandle<()>>,
    cache: Mutex<LruCache<String, Embedding>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("model", &self.profile.name).finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads the configured model on a new inference thread. `Ok(None)` when embeddings are
    /// turned off (`embed.model = "none"`).
    pub fn start(settings: &EmbedSettings) -> Result<Option<Embedder>, EmbedError> {
        if settings.model == "none" {
            return Ok(None);
        }
        let profile = ModelProfile::named(&settings.model).ok_or_else(|| EmbedError::UnknownModel {
            name: settings.model.clone(),
            known: ModelProfile::known_names().join(", "),
        })?;
        let dir = settings.models_dir.join(&profile.name);
        if !dir.is_dir() {
            return Err(EmbedError::NotInstalled {
                model: profile.name.clone(),
                dir: settings.models_dir.clone(),
            });
        }
        let device = device(&settings.device)?;
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (urgent, urgent_inbox) = mpsc::channel::<Urgent>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("sputnik-embed".into())
            .spawn(move || inference_loop(&dir, profile, device, (inbox, urgent_inbox), ready_tx))
            .map_err(EmbedError::load)?;
        let tokenizer = ready_rx.recv().map_err(|_| EmbedError::Stopped)??;
        let capacity = NonZeroUsize::new(settings.query_cache.max(1)).expect("at least one entry");
        Ok(Some(Embedder {
            profile,
            tokenizer,
            jobs: Some(jobs),
            urgent,
            worker: Some(worker),
            cache: Mutex::new(LruCache::new(capacity)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }))
    }

    pub fn profile(&self) -> &'static ModelProfile {
        self.profile
    }

    /// Queues a job for the inference thread; its answer comes on the returned receiver.
    fn submit<T>(
        &self,
        job: impl FnOnce(mpsc::Sender<Result<T, EmbedError>>) -> Job,
    ) -> Result<mpsc::Receiver<Result<T, EmbedError>>, EmbedError> {
        let (reply, answer) = mpsc::channel();
        self.jobs.as_ref().ok_or(EmbedError::Stopped)?.send(job(reply)).map_err(|_| EmbedError::Stopped)?;
        Ok(answer)
    }

    fn send<T>(&self, job: impl FnOnce(mpsc::Sender<Result<T, EmbedError>>) -> Job) -> Result<T, EmbedError> {
        self.submit(job)?.recv().map_err(|_| EmbedError::Stopped)?
    }

    /// Embeds raw texts exactly as given (no prefixes), in order.
    pub fn embed_raw(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        self.send(|reply| Job::Embed { texts, reply })
    }

    /// Embeds passages for the index, adding the model's passage prefix.
    pub fn embed_passages(&self, passages: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.submit_passages(passages)?.wait()
    }

    /// Sends passages to the inference thread without waiting for them: an import parses the
    /// next files meanwhile. Passages submitted back to back are embedded in shared batches.
    pub fn submit_passages(&self, passages: &[String]) -> Result<PendingEmbeddings, EmbedError> {
        let prefix = &self.profile.passage_prefix;
        let texts = passages.iter().map(|p| format!("{prefix}{p}")).collect();
        Ok(PendingEmbeddings(self.submit(|reply| Job::Embed { texts, reply })?))
    }

    /// Embeds a question, adding the query prefix; repeated questions come from the cache.
    pub fn embed_query(&self, query: &str) -> Result<Embedding, EmbedError> {
        let key = query.trim().to_owned();
        if let Some(hit) = self.cache.lock().expect("cache lock").get(&key).cloned() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(hit);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let text = format!("{}{key}", self.profile.query_prefix);
        let (reply, answer) = mpsc::channel();
        self.urgent.send(Urgent { text, reply }).map_err(|_| EmbedError::Stopped)?;
        self.jobs.as_ref().ok_or(EmbedError::Stopped)?.send(Job::Wake).map_err(|_| EmbedError::Stopped)?;
        let vector: Embedding =
            answer.recv().map_err(|_| EmbedError::Stopped)??.pop().ok_or(EmbedError::Stopped)?.into();
        self.cache.lock().expect("cache lock").put(key, vector.clone());
        Ok(vector)
    }

    /// How many tokens `text` is in the model's own vocabulary (no special tokens, no truncation).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer.count(text)
    }

    /// Token ids of `text` as the model sees it.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EmbedError> {
        self.tokenizer.token_ids(text)
    }

    pub fn cache_stats(&self) -> CacheStats {
        CacheStats { hits: self.hits.load(Ordering::Relaxed), misses: self.misses.load(Ordering::Relaxed) }
    }
}

impl Drop for Embedder {
    fn drop(&mut self) {
        // Closing the channel ends the loop; the model is freed on its own thread.
        self.jobs.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn device(name: &str) -> Result<candle_core::Device, EmbedError> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" if cfg!(feature = "cuda") => {
            candle_core::Device::new_cuda(0).map_err(|e| EmbedError::Cuda(e.to_string()))
        }
        "cuda" => Err(EmbedError::NoCudaSupport),
        other => Err(EmbedError::Load(format!("unknown device {other:?} (use \"cpu\" or \"cuda\")"))),
    }
}

/// The model forward passes Sputnik knows, chosen by the manifest's `architecture`.
enum Encoder {
    /// f32 BERT from safetensors (all-MiniLM-L6-v2).
    #[cfg(feature = "minilm")]
    Bert(bert::BertEncoder),
    /// BERT-architecture encoder with Q4_0 weights from GGUF (multilingual-e5-small).
    Quantized(quantized::QuantizedEncoder),
}

impl Encoder {
    fn load(dir: &Path, profile: &ModelProfile, device: candle_core::Device) -> Result<Encoder, EmbedError> {
        match profile.architecture.as_str() {
            #[cfg(feature = "minilm")]
            "bert" => Ok(Encoder::Bert(bert::BertEncoder::load(dir, profile, device)?)),
            #[cfg(not(feature = "minilm"))]
            "bert" => Err(EmbedError::Load(format!(
                "{} needs a Sputnik built with the `minilm` feature (the packages leave it out); use \
                 the default model, multilingual-e5-small",
                profile.name
            ))),
            "bert-q4_0" => Ok(Encoder::Quantized(quantized::QuantizedEncoder::load(dir, profile, device)?)),
            other => {
                Err(EmbedError::Load(format!("model architecture {other:?} is not supported by this build")))
            }
        }
    }

    fn tokenizer(&self) -> &Arc<tokens::ModelTokenizer> {
        match self {
            #[cfg(feature = "minilm")]
            Encoder::Bert(e) => e.tokenizer(),
            Encoder::Quantized(e) => e.tokenizer(),
        }
    }

    fn embed_batch(&self, batch: &tokens::Batch) -> Result<Vec<Vec<f32>>, EmbedError> {
        match self {
            #[cfg(feature = "minilm")]
            Encoder::Bert(e) => e.embed_batch(batch),
            Encoder::Quantized(e) => e.embed_batch(batch),
        }
    }

    /// Encodes and embeds texts as one batch (a question, on the inference thread).
    fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_batch(&self.tokenizer().batch(texts)?)
    }

    /// Whether a batch is padded to its longest text (and so best made of texts of one length).
    fn pads(&self) -> bool {
        match self {
            #[cfg(feature = "minilm")]
            Encoder::Bert(_) => true,
            Encoder::Quantized(e) => e.pads(),
        }
    }

    /// Frees what the encoder keeps between batches.
    fn release_buffers(&self) {
        match self {
            #[cfg(feature = "minilm")]
            Encoder::Bert(_) => {}
            Encoder::Quantized(e) => e.release_buffers(),
        }
    }
}

fn inference_loop(
    dir: &Path,
    profile: &'static ModelProfile,
    device: candle_core::Device,
    (inbox, urgent): (mpsc::Receiver<Job>, mpsc::Receiver<Urgent>),
    ready: mpsc::Sender<Result<Arc<tokens::ModelTokenizer>, EmbedError>>,
) {
    let encoder = match Encoder::load(dir, profile, device) {
        Ok(encoder) => {
            let _ = ready.send(Ok(Arc::clone(encoder.tokenizer())));
            encoder
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let questions_first = || {
        while let Ok(Urgent { text, reply }) = urgent.try_recv() {
            let _ = reply.send(encoder.embed(&[text]));
        }
    };
    let mut held = None;
    let next = |held: &mut Option<Job>| {
        held.take().or_else(|| inbox.try_recv().ok()).or_else(|| {
            // Nothing waits: the batches' buffers go back before the thread sleeps.
            encoder.release_buffers();
            inbox.recv().ok()
        })
    };
    while let Some(job) = next(&mut held) {
        questions_first();
        match job {
            Job::Embed { texts, reply } => {
                // Passages already queued behind this job join its batches (an import submits
                // file after file; one-chunk files would otherwise make batches of one).
                let mut jobs = vec![(texts, reply)];
                let mut count = jobs[0].0.len();
                while count < MAX_BATCH {
                    match inbox.try_recv() {
                        Ok(Job::Embed { texts, reply }) => {
                            count += texts.len();
                            jobs.push((texts, reply));
                        }
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                embed_jobs(&encoder, jobs, &questions_first);
            }
            Job::Wake => {}
        }
    }
}

/// Embeds several jobs' texts together and answers each job with its own vectors (or the error).
fn embed_jobs(encoder: &Encoder, jobs: Vec<(Vec<String>, EmbedReply)>, between: &dyn Fn()) {
    let counts: Vec<usize> = jobs.iter().map(|(texts, _)| texts.len()).collect();
    let (texts, replies): (Vec<Vec<String>>, Vec<EmbedReply>) = jobs.into_iter().unzip();
    match embed_in_batches(encoder, &texts.into_iter().flatten().collect::<Vec<_>>(), between) {
        Ok(vectors) => {
            let mut vectors = vectors.into_iter();
            for (reply, count) in replies.into_iter().zip(counts) {
                let _ = reply.send(Ok(vectors.by_ref().take(count).collect()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Sorts texts by token count and runs batches that fit the token budget, then restores the
/// callers' order; `between` runs before each batch (to serve waiting questions). Results do not
/// depend on how texts were grouped (padding is masked out, or there is none).
fn embed_in_batches(
    encoder: &Encoder,
    texts: &[String],
    between: &dyn Fn(),
) -> Result<Vec<Vec<f32>>, EmbedError> {
    // Each text is encoded once: its length orders the batches, its ids make them. On every core
    // (the pool the encoder's products use): tokenising on this thread alone left the others
    // idle for 4 % of an import.
    use rayon::prelude::*;
    let tokenizer = encoder.tokenizer();
    let encoded = texts.par_iter().map(|text| tokenizer.token_ids(text)).collect::<Result<Vec<_>, _>>()?;
    let counts: Vec<usize> = encoded.iter().map(Vec::len).collect();
    let mut order: Vec<usize> = (0..encoded.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(counts[i]));
    let mut out: Vec<Option<Vec<f32>>> = vec![None; encoded.len()];
    let pads = encoder.pads();
    // Unpadded, two batches of half the budget run side by side: each core works through one,
    // and a core that finishes its share of a step first takes work from the other batch
    // instead of waiting at the step's end (one batch at a time left the cores idle 6 % of an
    // import, at a hundred such joins per batch).
    let paired = !pads && rayon::current_num_threads() > 1;
    let budget = if paired { PLAIN_TOKEN_BUDGET / 2 } else { PLAIN_TOKEN_BUDGET };
    let embed = |texts: &[usize]| -> Result<Vec<Vec<f32>>, EmbedError> {
        let ids: Vec<&[u32]> = texts.iter().map(|&i| encoded[i].as_slice()).collect();
        encoder.embed_batch(&encoder.tokenizer().batch_of(&ids))
    };
    let mut start = 0;
    while start < order.len() {
        between();
        let first = batch_size(&order[start..], &counts, pads, budget);
        let second = if paired && start + first < order.len() {
            batch_size(&order[start + first..], &counts, pads, budget)
        } else {
            0
        };
        let (a, b) = order[start..start + first + second].split_at(first);
        let (first_vectors, second_vectors) =
            if b.is_empty() { (embed(a), Ok(Vec::new())) } else { rayon::join(|| embed(a), || embed(b)) };
        for (&i, vector) in a.iter().chain(b).zip(first_vectors?.into_iter().chain(second_vectors?)) {
            out[i] = Some(vector);
        }
        start += first + second;
    }
    Ok(out.into_iter().map(|v| v.expect("every text was embedded")).collect())
}

/// How many of `order`'s first texts (longest first) the next batch takes: padded, as many as
/// fit the token and attention budgets at the first one's length; unpadded, as many as fit the
/// plain token budget together. At least one.
fn batch_size(order: &[usize], counts: &[usize], padded: bool, plain_budget: usize) -> usize {
    if padded {
        let longest = counts[order[0]].max(1);
        return (BATCH_TOKEN_BUDGET / longest)
            .min(BATCH_ATTENTION_BUDGET / (longest * longest))
            .clamp(1, MAX_BATCH)
            .min(order.len());
    }
    let mut total = 0;
    let fitting = order.iter().take_while(|&&i| {
        total += counts[i].max(1);
        total <= plain_budget
    });
    fitting.count().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpadded_batches_fill_the_token_budget_and_padded_ones_the_longest_times_the_count() {
        // Longest first, as embed_in_batches orders them.
        let counts = [512, 300, 300, 256, 256, 200, 10, 10];
        let order: Vec<usize> = (0..counts.len()).collect();
        let plain = |order: &[usize], counts: &[usize], budget| batch_size(order, counts, false, budget);
        // 512 + 300 + 300 = 1,112; another 256 would make 1,368.
        assert_eq!(plain(&order, &counts, PLAIN_TOKEN_BUDGET), 3);
        assert_eq!(plain(&order[3..], &counts, PLAIN_TOKEN_BUDGET), 5, "256 + 256 + 200 + 10 + 10");
        // Half the budget, as each of two batches side by side: 512 + 300 exceeds 640.
        assert_eq!(plain(&order, &counts, PLAIN_TOKEN_BUDGET / 2), 1);
        assert_eq!(plain(&order[1..], &counts, PLAIN_TOKEN_BUDGET / 2), 2, "300 + 300");
        let long = [1000, 600, 10];
        assert_eq!(plain(&[0, 1, 2], &long, PLAIN_TOKEN_BUDGET), 1, "1,000 + 600 exceeds 1,280");
        assert_eq!(plain(&[0], &[5000], PLAIN_TOKEN_BUDGET), 1, "a text over the budget goes alone");
        // Padded: 2¹⁹ / 512² = 2 texts of 512 tokens, whatever the plain budget.
        assert_eq!(batch_size(&order, &counts, true, PLAIN_TOKEN_BUDGET / 2), 2);
        assert_eq!(
            batch_size(&order[6..], &counts, true, PLAIN_TOKEN_BUDGET),
            2,
            "never past the texts left"
        );
    }
}
