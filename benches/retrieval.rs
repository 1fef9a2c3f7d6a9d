//! Embeddings and hybrid retrieval: query embedding latency, passage embedding throughput,
//! import throughput with embeddings, exact scan against HNSW at 10k and 100k vectors, hybrid
//! search latency at 10k and 100k chunks (cold and warm query cache), peak RSS, and the time
//! `sputnik serve` takes from start to ready at 10k and 100k chunks.
//!
//! Needs the models (`models/fetch`); the model figures are taken for each of them, side by side
//! (`SPUTNIK_BENCH_MODELS` picks some). Vector-only measurements use clustered synthetic
//! unit vectors (uniform random vectors make any ANN index look broken); the hybrid figures use
//! a store filled with generated Russian/English chunks and such vectors, so the full-text leg,
//! the vector leg, fusion, store lookups and snippets all run as in production, while the query
//! embedding is real.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sputnik::config::SearchMode;
use sputnik::embed::Embedder;
use sputnik::ingest::{ImportRequest, Quiet};
use sputnik::search::{SearchRequest, VectorIndex};
use sputnik::store::{
    ChunkRecord, ChunkVectors, DocumentId, DocumentRecord, Format, Language, NewDocument, Store,
};
use sputnik::{App, Settings};

#[path = "support/mod.rs"]
mod support;
use support::{Rng, ms, part, percentile, process_status_mib, questions, vocabulary};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DIM: usize = 384;
/// The model the hybrid figures are stored under (the default one; its vectors are synthetic).
const MODEL: &str = "multilingual-e5-small";

/// Models for the side-by-side figures: `SPUTNIK_BENCH_MODELS=a,b` (default: both).
fn models() -> Vec<String> {
    std::env::var("SPUTNIK_BENCH_MODELS")
        .unwrap_or_else(|_| "multilingual-e5-small,all-minilm-l6-v2".into())
        .split(',')
        .map(|m| m.trim().to_owned())
        .collect()
}

fn current_rss_mib() -> f64 {
    status_mib("VmRSS:")
}

/// Gaussian noise on top of the shared generator.
trait Gaussian {
    fn unit(&mut self) -> f32;
    fn gaussian(&mut self) -> f32;
}

impl Gaussian for Rng {
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn gaussian(&mut self) -> f32 {
        let (u, v) = (self.unit().max(1e-7), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// `n` unit vectors around `n / 50` random centres, like embeddings of topical chunks.
fn clustered(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng(seed);
    let centres: Vec<Vec<f32>> =
        (0..(n / 50).max(1)).map(|_| normalise((0..DIM).map(|_| rng.gaussian()).collect())).collect();
    (0..n)
        .map(|i| {
            let centre = &centres[i % centres.len()];
            normalise(centre.iter().map(|c| c + 0.03 * rng.gaussian()).collect())
        })
        .collect()
}

/// Both languages' handbook words together.
fn words() -> Vec<String> {
    let (mut en, ru) = vocabulary();
    en.extend(ru);
    en
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let (p50, p95) = (percentile(&samples, 0.5), percentile(&samples, 0.95));
    format!("p50 {:.3} ms, p95 {:.3} ms (n = {})", ms(p50), ms(p95), samples.len())
}

fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// A memory figure of this process from /proc/self/status, in MiB.
fn status_mib(key: &str) -> f64 {
    process_status_mib("self", key)
}

/// Starts a new peak-RSS window (Linux: writing 5 to clear_refs resets VmHWM).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn model_settings(data: &Path) -> Settings {
    let mut settings = Settings::for_data_dir(data);
    settings.embed.models_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    settings
}

fn named_model_settings(data: &Path, model: &str) -> Settings {
    let mut settings = model_settings(data);
    settings.embed.model = model.to_owned();
    settings
}

/// A store with `chunks` generated chunks (4 per document) and synthetic vectors.
fn fill_store(data: &Path, chunks: usize, words: &[String]) {
    std::fs::create_dir_all(data).unwrap();
    let store = Store::open(&data.join("sputnik.redb")).unwrap();
    let vectors = clustered(chunks, 11);
    let mut rng = Rng(3);
    for (d, group) in vectors.chunks(4).enumerate() {
        let records: Vec<ChunkRecord> = (0..group.len())
            .map(|i| {
                let text: Vec<&str> = (0..190).map(|_| rng.pick(words)).collect();
                ChunkRecord {
                    ordinal: i as u32,
                    heading_path: vec![format!("Section {i}")],
                    text: text.join(" "),
                    start: 0,
                    end: 0,
                    tokens: 254,
                }
            })
            .collect();
        let document = NewDocument {
            root: "/bench".into(),
            source: format!("doc-{d:06}.md"),
            title: format!("Document {d}"),
            language: if d % 2 == 0 { Language::En } else { Language::Ru },
            groups: vec![],
            content_hash: format!("{d}"),
            pipeline: "bench".into(),
            format: Format::Markdown,
            size: 0,
            updated_at: 0,
            chunks: records,
        };
        store.put_document(document, Some(ChunkVectors { model: MODEL, vectors: group })).unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let words = words();

    for model in models() {
        if part("model") {
            bench_model(c, tmp.path(), &words, &model);
        }
        if part("import") {
            bench_import(tmp.path(), &words, &model);
        }
    }
    if part("vectors") {
        bench_vectors();
    }
    if part("hybrid") {
        bench_hybrid(c, tmp.path(), &words);
    }
    if part("coldstart") {
        bench_coldstart(tmp.path(), &words);
    }
}

/// `sputnik serve` from process start to systemd readiness (READY=1 on NOTIFY_SOCKET: Telegram
/// answered, store, indexes and model open, HTTP listening) on 10k and 100k chunks, against a
/// Bot API stand-in on 127.0.0.1. The full-text index is built beforehand, as after any earlier
/// run; the vector index and the model load at start, as they always do.
///
/// With `SPUTNIK_BENCH_POSTGRES=1` the same stores are also copied into a throw-away PostgreSQL
/// cluster (`tests/pg-cluster`) and a replica is started on each: first with an empty data
/// directory (it builds its full-text index from the store), then twice more from that directory.
fn bench_coldstart(tmp: &Path, words: &[String]) {
    let api = fake_bot_api();
    let cluster = std::env::var("SPUTNIK_BENCH_POSTGRES").is_ok_and(|v| v == "1").then(PgCluster::start);
    for n in [10_000usize, 100_000] {
        let data = tmp.join(format!("coldstart-{n}"));
        if !data.exists() {
            fill_store(&data, n, words);
            drop(App::open(model_settings(&data)).unwrap());
        }
        let (samples, ready_rss): (Vec<Duration>, Vec<f64>) =
            (0..3).map(|_| time_to_ready(tmp, &api, &data, &[])).unzip();
        let best = samples.iter().min().unwrap();
        println!(
            "cold start to ready, {n} chunks: {:.2} s (best of 3; {samples:?}); RSS at ready {ready_rss:.0?} MiB",
            best.as_secs_f64()
        );
        let Some(cluster) = &cluster else { continue };
        let url = cluster.database(&format!("bench_{n}"));
        let started = Instant::now();
        let mut copy = std::process::Command::new(env!("CARGO_BIN_EXE_sputnik"));
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("SPUTNIK_")) {
            copy.env_remove(key);
        }
        let copied = copy.arg("--data-dir").arg(&data).args(["copy-store", "--to", &url]).output().unwrap();
        assert!(copied.status.success(), "{}", String::from_utf8_lossy(&copied.stderr));
        println!("copy-store into PostgreSQL, {n} chunks: {:.1} s", started.elapsed().as_secs_f64());
        let replica = tmp.join(format!("replica-{n}"));
        let on_postgres = [("SPUTNIK_STORE__BACKEND", "postgres"), ("SPUTNIK_STORE__URL", url.as_str())];
        let starts: Vec<(Duration, f64)> =
            (0..3).map(|_| time_to_ready(tmp, &api, &replica, &on_postgres)).collect();
        println!(
            "replica on PostgreSQL, {n} chunks, start to ready: first (index built) {:.2} s, later {:.2} s and {:.2} s; RSS at ready {:.0?} MiB",
            starts[0].0.as_secs_f64(),
            starts[1].0.as_secs_f64(),
            starts[2].0.as_secs_f64(),
            starts.iter().map(|(_, rss)| *rss).collect::<Vec<_>>()
        );
    }
}

/// Starts `sputnik serve` on `data` (with `env` added) and waits for READY=1; returns the time
/// that took and the process's RSS then, and stops it.
fn time_to_ready(tmp: &Path, api: &str, data: &Path, env: &[(&str, &str)]) -> (Duration, f64) {
    use std::os::unix::net::UnixDatagram;
    let socket_path = tmp.join("notify.sock");
    let _ = std::fs::remove_file(&socket_path);
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let log_path = tmp.join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let started = Instant::now();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sputnik"));
    // The bench's own SPUTNIK_BENCH_* settings are not configuration.
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("SPUTNIK_")) {
        command.env_remove(key);
    }
    let mut child = command
        .arg("serve")
        .env("SPUTNIK_DATA_DIR", data)
        .env("SPUTNIK_EMBED__MODELS_DIR", Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
        .env("SPUTNIK_TELEGRAM_TOKEN", "1:bench")
        .env("SPUTNIK_TELEGRAM_API_URL", api)
        .env("SPUTNIK_HTTP_LISTEN", "127.0.0.1:0")
        .env("NOTIFY_SOCKET", &socket_path)
        .envs(env.iter().copied())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut buffer = [0u8; 256];
    let received = socket.recv(&mut buffer).unwrap_or_else(|e| {
        panic!(
            "no READY=1 ({e}); sputnik serve said:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        )
    });
    let elapsed = started.elapsed();
    assert!(String::from_utf8_lossy(&buffer[..received]).contains("READY=1"));
    let rss = process_status_mib(&child.id().to_string(), "VmRSS:");
    let _ = std::process::Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    (elapsed, rss)
}

/// A throw-away PostgreSQL cluster from `tests/pg-cluster`, stopped when this process ends.
struct PgCluster {
    port: u16,
    bin: std::path::PathBuf,
    _guard: std::process::Child,
}

impl PgCluster {
    fn start() -> PgCluster {
        use std::io::BufRead;
        let mut guard =
            std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pg-cluster"))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("run tests/pg-cluster (tests/setup installs PostgreSQL)");
        let mut line = String::new();
        std::io::BufReader::new(guard.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [port, bin, _] = fields[..] else { panic!("tests/pg-cluster did not start a cluster") };
        PgCluster { port: port.parse().unwrap(), bin: bin.into(), _guard: guard }
    }

    /// A new, empty database, as a connection URL.
    fn database(&self, name: &str) -> String {
        let created = std::process::Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "sputnik", name])
            .status()
            .unwrap();
        assert!(created.success());
        format!("postgresql://sputnik@127.0.0.1:{}/{name}", self.port)
    }
}

/// A Bot API stand-in: getMe answers, getUpdates waits a little and returns nothing, the rest
/// says ok. Returns its base URL.
fn fake_bot_api() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = axum::Router::new().route(
                "/{token}/{method}",
                axum::routing::any(
                    |axum::extract::Path((_, method)): axum::extract::Path<(String, String)>| async move {
                        let result = match method.to_ascii_lowercase().as_str() {
                            "getme" => serde_json::json!({"id": 1, "is_bot": true, "first_name": "Bench",
                            "username": "BenchBot", "can_join_groups": false,
                            "can_read_all_group_messages": false, "supports_inline_queries": false,
                            "has_main_web_app": false}),
                            "getupdates" => {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                                serde_json::json!([])
                            }
                            _ => serde_json::json!(true),
                        };
                        axum::Json(serde_json::json!({"ok": true, "result": result}))
                    },
                ),
            );
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{address}")
}

fn bench_model(c: &mut Criterion, tmp: &Path, words: &[String], model: &str) {
    let settings = named_model_settings(tmp, model);
    let before = current_rss_mib();
    let started = Instant::now();
    let embedder = Embedder::start(&settings.embed).unwrap().expect("model configured");
    println!(
        "{model}: load {:.0} ms, RSS +{:.0} MiB after load",
        ms(started.elapsed()),
        current_rss_mib() - before
    );
    let prefix = embedder.profile().query_prefix.clone();
    let questions: Vec<String> = questions().iter().map(|q| format!("{prefix}{q}")).collect();
    let mut group = c.benchmark_group(format!("embed/{model}"));
    let mut next = 0;
    group.bench_function("query_uncached", |b| {
        b.iter(|| {
            next = (next + 1) % questions.len();
            embedder.embed_raw(vec![questions[next].clone()]).unwrap()
        })
    });
    let mut rng = Rng(5);
    // ~256 tokens for either tokenizer: cut the word stream at the model's token count.
    let passages: Vec<String> = (0..32)
        .map(|_| {
            let mut words_in: Vec<&str> = Vec::new();
            loop {
                words_in.push(rng.pick(words));
                if words_in.len().is_multiple_of(10)
                    && embedder.token_ids(&words_in.join(" ")).unwrap().len() >= 256
                {
                    break words_in.join(" ");
                }
            }
        })
        .collect();
    let tokens = embedder.token_ids(&passages[0]).unwrap().len();
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function("passages_32", |b| b.iter(|| embedder.embed_passages(&passages).unwrap()));
    group.finish();
    let started = Instant::now();
    embedder.embed_passages(&passages).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{model}: passage embedding: 32 passages of ~{tokens} tokens in {seconds:.2} s = {:.1} passages/s",
        32.0 / seconds
    );
    let started = Instant::now();
    for _ in 0..10 {
        embedder.token_ids(&passages[0]).unwrap();
    }
    println!("{model}: tokenising one {tokens}-token passage: {:.3} ms", ms(started.elapsed()) / 10.0);
    println!("{model}: RSS +{:.0} MiB after embedding (model and buffers)", current_rss_mib() - before);
    drop(embedder);
}

/// Import with embeddings: the real pipeline on ~256-token chunks.
fn bench_import(tmp: &Path, words: &[String], model: &str) {
    let corpus = tmp.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let mut rng = Rng(9);
    for d in 0..50 {
        let mut text = format!("# Document {d}\n\n");
        for s in 0..4 {
            let body: Vec<&str> = (0..190).map(|_| rng.pick(words)).collect();
            text.push_str(&format!("## Section {s}\n\n{}.\n\n", body.join(" ")));
        }
        std::fs::write(corpus.join(format!("doc-{d}.md")), text).unwrap();
    }
    let app = App::open(named_model_settings(&tmp.join(format!("import-{model}")), model)).unwrap();
    let started = Instant::now();
    let report =
        app.import(&ImportRequest { paths: vec![corpus.clone()], ..Default::default() }, &mut Quiet).unwrap();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{model}: import with embeddings: {} chunks in {seconds:.1} s = {:.1} chunks/s",
        report.chunks_written,
        report.chunks_written as f64 / seconds
    );
    drop(app);
}

/// Exact scan against HNSW on clustered vectors.
fn bench_vectors() {
    for n in [10_000usize, 100_000] {
        let vectors = clustered(n, 21);
        let queries: Vec<Vec<f32>> = clustered(n, 99).into_iter().step_by(n / 200).take(200).collect();
        let documents: Vec<DocumentRecord> = (0..n).map(|i| bench_document(i as u64)).collect();
        let build = |limit: usize| {
            let mut index = VectorIndex::new(DIM, usize::MAX);
            for (document, vector) in documents.iter().zip(&vectors) {
                index.replace_document(document, &[(0, vector.clone())]);
            }
            let started = Instant::now();
            index.set_exact_scan_limit(limit);
            (index, started.elapsed())
        };
        let (exact, _) = build(usize::MAX);
        let (graph, graph_build) = build(0);
        let mut exact_times = Vec::new();
        let mut graph_times = Vec::new();
        let mut recall = 0usize;
        for query in &queries {
            let started = Instant::now();
            let truth = exact.search(query, Language::En, &[], 10);
            exact_times.push(started.elapsed());
            let started = Instant::now();
            let approx = graph.search(query, Language::En, &[], 10);
            graph_times.push(started.elapsed());
            recall += approx.iter().filter(|h| truth.iter().any(|t| t.document == h.document)).count();
        }
        println!("vectors {n}: exact scan {}", percentiles(exact_times));
        println!(
            "vectors {n}: HNSW build {:.1} s, search {}, recall@10 {:.3}",
            graph_build.as_secs_f64(),
            percentiles(graph_times),
            recall as f64 / (queries.len() * 10) as f64
        );
    }
}

/// Hybrid search over a full knowledge base, and the memory it takes to serve it.
fn bench_hybrid(c: &mut Criterion, tmp: &Path, words: &[String]) {
    let questions = questions();
    for n in [10_000usize, 100_000] {
        let data = tmp.join(format!("kb-{n}"));
        fill_store(&data, n, words);
        // Open once to build the full-text index; the measured open below is a warm start.
        drop(App::open(model_settings(&data)).unwrap());
        reset_peak_rss();
        let started = Instant::now();
        let app = App::open(model_settings(&data)).unwrap();
        println!(
            "open {n}-chunk knowledge base (model, vectors{}): {:.1} s",
            if n > 200_000 { ", HNSW build" } else { "" },
            started.elapsed().as_secs_f64()
        );
        let stats = app.stats().unwrap();
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        let mut lexical = Vec::new();
        for round in 0..4 {
            for (i, question) in questions.iter().enumerate() {
                // The first round's texts are new to the cache (cold); later rounds repeat them.
                let query = format!("{question} {i}");
                let request = SearchRequest {
                    query,
                    k: 5,
                    groups: vec![],
                    mode: Some(SearchMode::Hybrid),
                    snippets: false,
                };
                let started = Instant::now();
                let outcome = app.search(&request).unwrap();
                (if round == 0 { &mut cold } else { &mut warm }).push(started.elapsed());
                assert!(!outcome.hits.is_empty());
                let request = SearchRequest { mode: Some(SearchMode::Lexical), ..request };
                let started = Instant::now();
                app.search(&request).unwrap();
                lexical.push(started.elapsed());
            }
        }
        println!(
            "hybrid {n} chunks ({:?}), cold query cache: {}",
            stats.vector_strategy.unwrap(),
            percentiles(cold)
        );
        println!("hybrid {n} chunks, warm query cache: {}", percentiles(warm));
        println!("lexical only {n} chunks: {}", percentiles(lexical));
        println!("peak RSS while serving {n} chunks (model, indexes, searches): {:.0} MiB", peak_rss_mib());
        if n == 10_000 {
            let mut group = c.benchmark_group("hybrid_10k");
            let mut i = 0;
            group.bench_function("warm_cache_k5", |b| {
                b.iter(|| {
                    i = (i + 1) % questions.len();
                    let request = SearchRequest {
                        query: questions[i].clone(),
                        k: 5,
                        groups: vec![],
                        mode: Some(SearchMode::Hybrid),
                        snippets: false,
                    };
                    app.search(&request).unwrap()
                })
            });
            group.finish();
            // Throughput with one and two threads asking at once (warm query cache: the model's
            // one inference thread is not the limit here, the indexes are). No lock is shared
            // between them but the vector index's read side.
            let mut group = c.benchmark_group("parallel_questions_10k");
            const BATCH: usize = 64;
            for threads in [1usize, 2] {
                group.bench_function(format!("{BATCH}_questions_{threads}_threads"), |b| {
                    b.iter_custom(|iterations| {
                        let started = Instant::now();
                        for _ in 0..iterations {
                            std::thread::scope(|scope| {
                                for t in 0..threads {
                                    let (app, questions) = (&app, &questions);
                                    scope.spawn(move || {
                                        for i in (t..BATCH).step_by(threads) {
                                            let request = SearchRequest {
                                                query: questions[i % questions.len()].clone(),
                                                k: 5,
                                                groups: vec![],
                                                mode: Some(SearchMode::Hybrid),
                                                snippets: false,
                                            };
                                            app.search(&request).unwrap();
                                        }
                                    });
                                }
                            });
                        }
                        started.elapsed()
                    })
                });
            }
            group.finish();
        }
    }
}

fn bench_document(id: u64) -> DocumentRecord {
    DocumentRecord {
        id: DocumentId(id + 1),
        root: "/".into(),
        source: format!("{id}.md"),
        title: String::new(),
        language: Language::En,
        groups: vec![],
        content_hash: String::new(),
        pipeline: String::new(),
        format: Format::Markdown,
        size: 0,
        imported_at: 0,
        updated_at: 0,
        chunk_count: 1,
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
