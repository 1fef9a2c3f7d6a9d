//! Import: files and directories → parsed documents → chunks → store → full-text index.
//!
//! Invariants:
//! - each file is decided on its own: one bad file is reported and skipped, the rest imports,
//!   and nothing already stored for that file is touched;
//! - an unchanged file (same content hash, same pipeline, same groups) writes nothing at all;
//! - a changed file replaces its document and all of its chunks in one store transaction, and
//!   the index follows at the next commit (a crash in between is repaired when the index opens);
//! - `sync` removes documents of an imported directory whose files are gone, but never for a
//!   directory that could not be read, so a missing mount does not wipe the knowledge base; the
//!   report says for which directories it could not run;
//! - a directory import reads only what lies under the directory: a symbolic link is followed
//!   only when its target is inside it, and a file is opened without following a link, so a
//!   link planted in a shared folder cannot publish `/etc/passwd` or the admin token.

pub mod chunk;
mod discover;
pub mod parse;
mod settings;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::embed::{Embedder, PendingEmbeddings};
use crate::search::{LexicalIndex, SharedLexical, SharedVectors};
use crate::store::{ChunkRecord, ChunkVectors, DocumentId, Format, NewDocument, SourceKey, Store};
use chunk::ChunkSizes;
pub use discover::{Candidate, Discovery, discover_request, stale_documents};
use parse::{ParseError, ParseLimits};
pub use settings::IngestSettings;

/// Bump when parsing or chunking changes what a file turns into: every file re-imports.
const PIPELINE_VERSION: u32 = 2;
/// Index commits during a long import, so progress survives an interruption.
const COMMIT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error("the file is {size}, over the {limit} limit (ingest.max_file_size)")]
    TooLarge { size: bytesize::ByteSize, limit: bytesize::ByteSize },
    #[error("unsupported file type (Sputnik reads .md, .txt, .html, .pdf, .docx, .odt)")]
    Unsupported,
    #[error("no such file or directory")]
    NotFound,
    #[error("the file name is not valid UTF-8")]
    NonUtf8Name,
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid glob {pattern:?}: {reason}")]
    BadGlob { pattern: String, reason: String },
    #[error(
        "a link to {target}, outside the imported folder; not imported (import that file or \
         folder by its own path if it belongs in the knowledge base)"
    )]
    LinkOutside { target: String },
    #[error("a link that cannot be followed ({0}); not imported")]
    BrokenLink(std::io::Error),
}

/// What to import and how.
#[derive(Debug, Clone, Default)]
pub struct ImportRequest {
    pub paths: Vec<PathBuf>,
    /// Access groups given to every imported document; empty means visible to everyone.
    pub groups: Vec<String>,
    pub sync: bool,
    pub dry_run: bool,
    /// Extra include/exclude globs on top of the configured ones.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

/// The fate of one file (or one removed document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    Added {
        chunks: usize,
        /// Parts of the file that could not be read and were left out (a page of a PDF).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
    Updated {
        chunks: usize,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
    Unchanged,
    Removed,
    Failed {
        reason: String,
    },
}

/// Receives progress while an import runs; the CLI draws a bar or logs lines from it.
pub trait ImportObserver {
    fn started(&mut self, _files: usize) {}
    fn file_done(&mut self, _path: &str, _outcome: &Outcome) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default)]
pub struct Quiet;
impl ImportObserver for Quiet {}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    pub dry_run: bool,
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub removed: usize,
    pub failed: usize,
    /// Files in imported directories that are not a supported type, or were excluded.
    pub skipped: usize,
    pub chunks_written: usize,
    pub failures: Vec<FailedFile>,
    /// Files imported without a part that could not be read (a PDF page), one line per part.
    pub warnings: Vec<FailedFile>,
    pub removed_sources: Vec<String>,
    /// Directories `--sync` could not clean because part of them could not be read.
    pub sync_skipped: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedFile {
    pub path: String,
    pub reason: String,
}

impl ImportReport {
    pub fn has_failures(&self) -> bool {
        self.failed > 0
    }

    fn note(&mut self, path: &str, warnings: &[String]) {
        self.warnings
            .extend(warnings.iter().map(|w| FailedFile { path: path.to_owned(), reason: w.clone() }));
    }

    /// Counts one file's outcome.
    pub fn record(&mut self, path: &str, outcome: &Outcome) {
        match outcome {
            Outcome::Added { chunks, warnings } => {
                self.added += 1;
                self.chunks_written += chunks;
                self.note(path, warnings);
            }
            Outcome::Updated { chunks, warnings } => {
                self.updated += 1;
                self.chunks_written += chunks;
                self.note(path, warnings);
            }
            Outcome::Unchanged => self.unchanged += 1,
            Outcome::Removed => {
                self.removed += 1;
                self.removed_sources.push(path.to_owned());
            }
            Outcome::Failed { reason } => {
                self.failed += 1;
                self.failures.push(FailedFile { path: path.to_owned(), reason: reason.clone() });
            }
        }
    }
}

/// The derived indexes an import keeps in step with the store, the model that embeds passages
/// for the dense one, and the writers' turn: each file is prepared without it and written with
/// it, so questions are answered and other writers take turns while a long import runs.
#[derive(Debug)]
pub struct Indexes<'a> {
    pub lexical: &'a SharedLexical,
    pub vectors: &'a SharedVectors,
    pub embedder: Option<&'a Embedder>,
    pub writing: &'a Mutex<()>,
}

/// The text a chunk is embedded as: where it sits (title › headings) and what it says.
pub fn passage_text(title: &str, heading_path: &[String], text: &str) -> String {
    let mut passage = String::with_capacity(title.len() + text.len() + 32);
    passage.push_str(title);
    for heading in heading_path {
        passage.push_str(" › ");
        passage.push_str(heading);
    }
    passage.push('\n');
    passage.push_str(text);
    passage
}

/// Embeds a document's chunks with `embedder`, in chunk order.
pub fn embed_chunks(
    embedder: &Embedder,
    title: &str,
    chunks: &[ChunkRecord],
) -> Result<Vec<Vec<f32>>, crate::Error> {
    Ok(embedder.embed_passages(&passages(title, chunks))?)
}

/// The texts a document's chunks are embedded as, in chunk order.
fn passages(title: &str, chunks: &[ChunkRecord]) -> Vec<String> {
    chunks.iter().map(|c| passage_text(title, &c.heading_path, &c.text)).collect()
}

/// Runs an import against an open store and its indexes.
pub fn import(
    store: &Store,
    indexes: Indexes<'_>,
    settings: &IngestSettings,
    request: &ImportRequest,
    observer: &mut dyn ImportObserver,
) -> Result<ImportReport, crate::Error> {
    let discovery = discover_request(settings, request)?;
    let removals = if request.sync {
        let present: Vec<(String, String)> =
            discovery.candidates.iter().map(|c| (c.root.clone(), c.source.clone())).collect();
        stale_documents(store, &discovery.synced_roots, &present)?
    } else {
        Vec::new()
    };
    let mut report = start_report(&discovery, request, removals.len(), observer);

    let Indexes { lexical, vectors, embedder, writing } = indexes;
    let turn = || writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut writer = IndexFollower { store, lexical, dirty: false, last_commit: Instant::now() };

    // Three stages side by side: a reader thread decides, parses and chunks the next files and
    // sends their passages to the embedding thread; the model embeds them; this thread writes
    // each file as its vectors arrive. At most IN_FLIGHT files are between the reader and the
    // writer, so memory is bounded by them, not by the size of the import.
    std::thread::scope(|scope| -> Result<(), crate::Error> {
        let (started, arrivals) = std::sync::mpsc::sync_channel(IN_FLIGHT);
        let candidates = &discovery.candidates;
        std::thread::Builder::new()
            .name("sputnik-import".into())
            .spawn_scoped(scope, move || {
                for candidate in candidates {
                    let next = start(store, embedder, settings, candidate, request);
                    let fatal = next.is_err();
                    if started.send(next).is_err() || fatal {
                        break;
                    }
                }
            })
            .map_err(IngestError::Io)?;
        for candidate in candidates {
            // The reader stops early only after sending a fault, or when it panicked (which the
            // scope then passes on).
            let next =
                arrivals.recv().map_err(|_| IngestError::Io(std::io::Error::other("the reader stopped")));
            let prepared = next??.finish()?;
            let outcome = {
                let _turn = turn();
                apply(&mut writer, vectors, prepared)?
            };
            report.record(&candidate.display, &outcome);
            observer.file_done(&candidate.display, &outcome);
        }
        Ok(())
    })?;

    for (id, source) in removals {
        if !request.dry_run {
            let _turn = turn();
            let (_, revision) = store.remove_document(id)?;
            writer.index().remove_document(id)?;
            writer.lexical.wrote(revision);
            vectors.update(|index| index.remove_document(id));
            writer.changed()?;
        }
        report.record(&source, &Outcome::Removed);
        observer.file_done(&source, &Outcome::Removed);
    }
    let _turn = turn();
    writer.finish()?;
    Ok(report)
}

/// Files read ahead of the one being written during an import.
const IN_FLIGHT: usize = 4;

/// One file decided and, when it is to be written, parsed, chunked and embedded: the slow
/// part of an import, which only reads the store. [`apply_prepared`] writes it.
#[derive(Debug)]
pub struct Prepared {
    decision: Result<Decision, String>,
    embedded: Option<(String, Vec<Vec<f32>>)>,
    dry_run: bool,
}

/// A file decided, parsed and chunked, its passages with the embedding thread.
struct Started {
    decision: Result<Decision, String>,
    embedding: Option<(String, PendingEmbeddings)>,
    dry_run: bool,
}

impl Started {
    /// Waits for the file's vectors.
    fn finish(self) -> Result<Prepared, crate::Error> {
        let embedded = match self.embedding {
            Some((model, pending)) => Some((model, pending.wait()?)),
            None => None,
        };
        Ok(Prepared { decision: self.decision, embedded, dry_run: self.dry_run })
    }
}

/// Decides what to do with one file and does the slow work for it; a file that cannot be
/// imported becomes a failed outcome, not an error (errors are faults of the store or model).
pub fn prepare(
    store: &Store,
    embedder: Option<&Embedder>,
    settings: &IngestSettings,
    candidate: &Candidate,
    request: &ImportRequest,
) -> Result<Prepared, crate::Error> {
    start(store, embedder, settings, candidate, request)?.finish()
}

/// [`prepare`] up to sending the passages to the embedding thread.
fn start(
    store: &Store,
    embedder: Option<&Embedder>,
    settings: &IngestSettings,
    candidate: &Candidate,
    request: &ImportRequest,
) -> Result<Started, crate::Error> {
    let limits = ParseLimits {
        max_unpacked_bytes: settings.max_unpacked_size.as_u64(),
        max_compression_ratio: settings.max_compression_ratio,
        max_pdf_pages: settings.max_pdf_pages,
    };
    let sizes = ChunkSizes {
        target_tokens: settings.chunk_target_tokens,
        max_tokens: settings.chunk_max_tokens,
        overlap_tokens: settings.chunk_overlap_tokens,
    };
    let counter: &dyn chunk::TokenCounter = match embedder {
        Some(embedder) => embedder,
        None => &chunk::Estimate,
    };
    let pipeline = pipeline_fingerprint(settings, counter);
    let decision = import_file(store, candidate, request, settings, &pipeline, &limits, (sizes, counter));
    let decision = match decision {
        Ok(decision) => decision,
        Err(crate::Error::Store(e)) => return Err(e.into()),
        Err(e) => {
            return Ok(Started { decision: Err(e.to_string()), embedding: None, dry_run: request.dry_run });
        }
    };
    let embedding = match (&decision, embedder) {
        (Decision::Write { document, .. }, Some(embedder)) if !request.dry_run => Some((
            embedder.profile().name.clone(),
            embedder.submit_passages(&passages(&document.title, &document.chunks))?,
        )),
        _ => None,
    };
    Ok(Started { decision: Ok(decision), embedding, dry_run: request.dry_run })
}

/// Writes one prepared file to the store and both indexes, and commits the full-text index.
/// The caller holds the writers' turn.
pub fn apply_prepared(
    store: &Store,
    lexical: &SharedLexical,
    vectors: &SharedVectors,
    prepared: Prepared,
) -> Result<Outcome, crate::Error> {
    let mut writer = IndexFollower { store, lexical, dirty: false, last_commit: Instant::now() };
    let outcome = apply(&mut writer, vectors, prepared)?;
    writer.finish()?;
    Ok(outcome)
}

/// Writes one prepared file; the caller holds the writers' turn.
fn apply(
    writer: &mut IndexFollower<'_>,
    vectors: &SharedVectors,
    prepared: Prepared,
) -> Result<Outcome, crate::Error> {
    let store = writer.store;
    let decision = match prepared.decision {
        Ok(decision) => decision,
        Err(reason) => return Ok(Outcome::Failed { reason }),
    };
    Ok(match decision {
        Decision::Unchanged => Outcome::Unchanged,
        Decision::Write { document, existed, warnings } => {
            let chunks = document.chunks.len();
            if !prepared.dry_run {
                let chunk_vectors =
                    prepared.embedded.as_ref().map(|(model, vectors)| ChunkVectors { model, vectors });
                let (record, revision) = store.put_document(document.clone(), chunk_vectors)?;
                writer.index().replace_document(&record, &document.chunks)?;
                writer.lexical.wrote(revision);
                if let Some((_, embedded)) = prepared.embedded {
                    let rows: Vec<(u32, Vec<f32>)> =
                        document.chunks.iter().map(|c| c.ordinal).zip(embedded).collect();
                    vectors.update(|index| index.replace_document(&record, &rows));
                }
                writer.changed()?;
            }
            if existed { Outcome::Updated { chunks, warnings } } else { Outcome::Added { chunks, warnings } }
        }
        Decision::Regroup { id, groups } => {
            if !prepared.dry_run {
                let (record, revision) = store.set_groups(id, groups)?;
                let chunks = store.chunks(id)?;
                writer.index().replace_document(&record, &chunks)?;
                writer.lexical.wrote(revision);
                vectors.update(|index| index.set_groups(&record));
                writer.changed()?;
            }
            Outcome::Updated { chunks: 0, warnings: Vec::new() }
        }
    })
}

/// Keeps the full-text index in step with store writes, committing now and then and at the end.
/// It writes to whichever index is current at each step: a rebuild swapped in meanwhile was made
/// from the store, which already holds what the old one had staged.
struct IndexFollower<'a> {
    store: &'a Store,
    lexical: &'a SharedLexical,
    dirty: bool,
    last_commit: Instant,
}

impl IndexFollower<'_> {
    fn index(&self) -> std::sync::Arc<LexicalIndex> {
        self.lexical.current()
    }

    fn changed(&mut self) -> Result<(), crate::Error> {
        self.dirty = true;
        if self.last_commit.elapsed() >= COMMIT_INTERVAL {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), crate::Error> {
        self.index().commit(self.lexical.state(self.store)?)?;
        self.dirty = false;
        self.last_commit = Instant::now();
        Ok(())
    }

    fn finish(mut self) -> Result<(), crate::Error> {
        if self.dirty {
            self.commit()?;
        }
        self.index().close_writer()?;
        Ok(())
    }
}

#[derive(Debug)]
enum Decision {
    Unchanged,
    Regroup { id: DocumentId, groups: Vec<String> },
    Write { document: NewDocument, existed: bool, warnings: Vec<String> },
}

fn import_file(
    store: &Store,
    candidate: &Candidate,
    request: &ImportRequest,
    settings: &IngestSettings,
    pipeline: &str,
    limits: &ParseLimits,
    (sizes, counter): (ChunkSizes, &dyn chunk::TokenCounter),
) -> Result<Decision, crate::Error> {
    let format = Format::from_path(&candidate.path).ok_or(IngestError::Unsupported)?;
    let read;
    let bytes = match &candidate.bytes {
        Some(bytes) => within_limit(bytes.len() as u64, settings.max_file_size).map(|()| bytes)?,
        None => {
            read = read_file(&candidate.path, settings.max_file_size)?;
            &read
        }
    };
    let size = bytes.len() as u64;
    let content_hash = blake3::hash(bytes).to_hex().to_string();
    let existing = store.find_by_source(&SourceKey { root: &candidate.root, source: &candidate.source })?;
    if let Some(existing) = &existing
        && existing.content_hash == content_hash
        && existing.pipeline == pipeline
    {
        if existing.groups == request.groups {
            return Ok(Decision::Unchanged);
        }
        return Ok(Decision::Regroup { id: existing.id, groups: request.groups.clone() });
    }
    let parsed = parse::parse(format, bytes, limits).map_err(IngestError::Parse)?;
    let chunks = chunk::chunk_document(&parsed, sizes, counter);
    if chunks.is_empty() {
        return Err(IngestError::Parse(ParseError::NoText).into());
    }
    let title = parsed.title.clone().unwrap_or_else(|| title_from_file_name(&candidate.path));
    let document = NewDocument {
        root: candidate.root.clone(),
        source: candidate.source.clone(),
        title,
        language: crate::lang::detect_document(chunks.iter().map(|c| c.text.as_str())),
        groups: request.groups.clone(),
        content_hash,
        pipeline: pipeline.to_owned(),
        format,
        size,
        updated_at: jiff::Timestamp::now().as_second(),
        chunks,
    };
    Ok(Decision::Write { document, existed: existing.is_some(), warnings: parsed.warnings })
}

/// A file's bytes, refusing one over `limit` before reading it. The file is opened without
/// following a link in its last component (discovery resolved and checked every link), so a
/// file swapped for a link after discovery is refused, not read.
pub fn read_file(path: &Path, limit: bytesize::ByteSize) -> Result<Vec<u8>, IngestError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    let size = file.metadata()?.len();
    within_limit(size, limit)?;
    let mut bytes = Vec::with_capacity(size as usize);
    // A file that grows while it is read is still held to the limit.
    file.by_ref().take(limit.as_u64() + 1).read_to_end(&mut bytes)?;
    within_limit(bytes.len() as u64, limit)?;
    Ok(bytes)
}

fn within_limit(size: u64, limit: bytesize::ByteSize) -> Result<(), IngestError> {
    if size > limit.as_u64() {
        return Err(IngestError::TooLarge { size: bytesize::ByteSize(size), limit });
    }
    Ok(())
}

/// The report of an import that is about to walk `discovery`: tells `observer` how many
/// outcomes to expect (`removals` included) and records the paths that could not be examined.
pub fn start_report(
    discovery: &Discovery,
    request: &ImportRequest,
    removals: usize,
    observer: &mut dyn ImportObserver,
) -> ImportReport {
    let mut report =
        ImportReport { dry_run: request.dry_run, skipped: discovery.skipped, ..ImportReport::default() };
    if request.sync {
        report.sync_skipped = discovery.incomplete_roots.clone();
    }
    observer.started(discovery.candidates.len() + discovery.unreadable.len() + removals);
    for (path, error) in &discovery.unreadable {
        let outcome = Outcome::Failed { reason: error.to_string() };
        report.record(path, &outcome);
        observer.file_done(path, &outcome);
    }
    report
}

/// "vacation-policy_2024.md" → "vacation policy 2024".
fn title_from_file_name(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("untitled");
    parse::collapse_whitespace(&stem.replace(['-', '_'], " "))
}

fn pipeline_fingerprint(settings: &IngestSettings, counter: &dyn chunk::TokenCounter) -> String {
    format!(
        "v{PIPELINE_VERSION}/t{}/m{}/o{}/{}",
        settings.chunk_target_tokens,
        settings.chunk_max_tokens,
        settings.chunk_overlap_tokens,
        counter.name()
    )
}
