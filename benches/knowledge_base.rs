//! Import throughput and full-text search latency on a generated 10k-chunk corpus.
//!
//! The corpus is deterministic: Markdown documents in Russian and English whose words are drawn
//! from the sample handbook's own vocabulary, four sections each, every section about one chunk
//! (~290 estimated tokens). Queries are 2–5 handbook words. Besides criterion's own estimates the
//! bench prints p50/p95/p99 over a fixed query set, which docs/benchmarks.md records.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sputnik::ingest::{ImportRequest, Quiet};
use sputnik::search::SearchRequest;
use sputnik::{App, Settings};

#[path = "support/mod.rs"]
mod support;
use support::{Rng, percentile, vocabulary};

const SECTIONS_PER_DOC: usize = 4;
const WORDS_PER_PARAGRAPH: usize = 105;

fn write_corpus(dir: &Path, documents: usize) {
    let (en, ru) = vocabulary();
    let mut rng = Rng(42);
    std::fs::create_dir_all(dir).unwrap();
    for d in 0..documents {
        let words = if d % 2 == 0 { &en } else { &ru };
        let mut text = format!("# {} {} {}\n\n", rng.pick(words), rng.pick(words), d);
        for s in 0..SECTIONS_PER_DOC {
            text.push_str(&format!("## {} {} {s}\n\n", rng.pick(words), rng.pick(words)));
            for _ in 0..2 {
                let paragraph: Vec<&str> = (0..WORDS_PER_PARAGRAPH).map(|_| rng.pick(words)).collect();
                text.push_str(&paragraph.join(" "));
                text.push_str(".\n\n");
            }
        }
        std::fs::write(dir.join(format!("doc-{d:05}.md")), text).unwrap();
    }
}

fn queries(count: usize) -> Vec<String> {
    let (en, ru) = vocabulary();
    let mut rng = Rng(7);
    (0..count)
        .map(|i| {
            let words = if i % 2 == 0 { &en } else { &ru };
            let n = 2 + (rng.next() % 4) as usize;
            (0..n).map(|_| rng.pick(words)).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

fn import(data: &Path, corpus: &Path) -> (App, usize) {
    // Full text only: this bench measures parsing, the store and tantivy (retrieval.rs has embeddings).
    let app = App::open(Settings::lexical_only(data)).unwrap();
    let request = ImportRequest { paths: vec![corpus.to_path_buf()], ..Default::default() };
    let report = app.import(&request, &mut Quiet).unwrap();
    assert_eq!(report.failed, 0);
    (app, report.chunks_written)
}

fn bench(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let corpus_10k: PathBuf = tmp.path().join("corpus-10k");
    write_corpus(&corpus_10k, 2500);
    let corpus_1k: PathBuf = tmp.path().join("corpus-1k");
    write_corpus(&corpus_1k, 250);

    // Import throughput: a fresh data directory per iteration.
    let mut group = c.benchmark_group("import");
    group.sample_size(10).measurement_time(Duration::from_secs(30));
    group.bench_function("1k_chunks_fresh", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for i in 0..iterations {
                let data = tmp.path().join(format!("import-{i}"));
                let started = Instant::now();
                let (app, _) = import(&data, &corpus_1k);
                total += started.elapsed();
                drop(app);
                std::fs::remove_dir_all(&data).unwrap();
            }
            total
        })
    });
    group.finish();

    let started = Instant::now();
    let (app, chunks) = import(&tmp.path().join("data-10k"), &corpus_10k);
    let elapsed = started.elapsed();
    println!(
        "import 10k corpus: {chunks} chunks in {:.2} s = {:.0} chunks/s",
        elapsed.as_secs_f64(),
        chunks as f64 / elapsed.as_secs_f64()
    );
    let started = Instant::now();
    let (app, _) = {
        let app = app;
        let reindexed = app.reindex().unwrap();
        (app, reindexed)
    };
    println!("reindex 10k corpus: {:.2} s", started.elapsed().as_secs_f64());

    // With snippets, as `sputnik search` shows hits; without, as answers use them.
    let queries = queries(400);
    for snippets in [true, false] {
        let mut latencies = Vec::with_capacity(queries.len() * 3);
        for _ in 0..3 {
            for query in &queries {
                let request =
                    SearchRequest { query: query.clone(), k: 5, groups: vec![], mode: None, snippets };
                let started = Instant::now();
                let hits = app.search(&request).unwrap();
                latencies.push(started.elapsed());
                std::hint::black_box(hits);
            }
        }
        latencies.sort();
        println!(
            "search k=5 {} over {chunks} chunks, {} queries: p50 {:?} p95 {:?} p99 {:?}",
            if snippets { "with snippets" } else { "for answers" },
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.95),
            percentile(&latencies, 0.99)
        );
    }

    let mut group = c.benchmark_group("search_10k_chunks");
    for (name, snippets) in [("k5_with_snippets", true), ("k5_for_answers", false)] {
        let mut next = 0usize;
        group.bench_function(name, |b| {
            b.iter(|| {
                next = (next + 1) % queries.len();
                let request = SearchRequest {
                    query: queries[next].clone(),
                    k: 5,
                    groups: vec![],
                    mode: None,
                    snippets,
                };
                app.search(&request).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
