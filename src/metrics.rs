//! Operational metrics in Prometheus form: one registry for the process, filled where things
//! happen (retrieval stages, answers, feedback, Telegram delivery) and read by `GET /metrics`.
//! Values that live in the store or the indexes (sizes, queue depth, cache counters) are set
//! from them when the metrics are scraped.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The answer path's stages, timed separately.
#[derive(Debug, Clone, Copy)]
pub enum Stage {
    Embed,
    Lexical,
    Dense,
    Fuse,
    Compose,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Stage::Embed => "embed",
            Stage::Lexical => "lexical",
            Stage::Dense => "dense",
            Stage::Fuse => "fuse",
            Stage::Compose => "compose",
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    stage_seconds: HistogramVec,
    answer_seconds: prometheus::Histogram,
    questions: IntCounterVec,
    feedback: IntCounterVec,
    telegram_errors: IntCounterVec,
    telegram_retries: IntCounter,
    pub cache: IntGaugeVec,
    pub cache_hit_ratio: prometheus::Gauge,
    pub index: IntGaugeVec,
    pub outbox_depth: IntGauge,
    /// HTTP connections closed unserved because the connection limit was reached.
    pub http_refused: IntCounter,
    llm_answers: IntCounterVec,
    llm_seconds: prometheus::Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Buckets from 0.1 ms to 2.5 s: a warm full-text search is ~1 ms, a cold question ~30 ms.
const BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new_custom(Some("sputnik".into()), None).expect("a valid prefix");
    let stage_seconds = HistogramVec::new(
        HistogramOpts::new("answer_stage_seconds", "Time spent in each stage of answering a question")
            .buckets(BUCKETS.to_vec()),
        &["stage"],
    )
    .expect("valid metric");
    let answer_seconds = prometheus::Histogram::with_opts(
        HistogramOpts::new("answer_seconds", "Time from a question to its composed answer")
            .buckets(BUCKETS.to_vec()),
    )
    .expect("valid metric");
    let questions =
        IntCounterVec::new(Opts::new("questions_total", "Questions asked, by outcome"), &["outcome"])
            .expect("valid metric");
    let feedback = IntCounterVec::new(Opts::new("feedback_total", "Feedback on answers, by kind"), &["kind"])
        .expect("valid metric");
    let telegram_errors = IntCounterVec::new(
        Opts::new("telegram_errors_total", "Failed Telegram Bot API calls, by kind"),
        &["kind"],
    )
    .expect("valid metric");
    let telegram_retries =
        IntCounter::new("telegram_retries_total", "Telegram deliveries put off to retry later")
            .expect("valid metric");
    let cache =
        IntGaugeVec::new(Opts::new("query_cache", "Query embedding cache lookups, by result"), &["result"])
            .expect("valid metric");
    let cache_hit_ratio =
        prometheus::Gauge::new("query_cache_hit_ratio", "Share of query embeddings served from the cache")
            .expect("valid metric");
    let index = IntGaugeVec::new(Opts::new("index_size", "Sizes of the knowledge base, by what"), &["what"])
        .expect("valid metric");
    let outbox_depth =
        IntGauge::new("outbox_depth", "Messages waiting for Telegram (answers, reminders, broadcasts)")
            .expect("valid metric");
    let http_refused = IntCounter::new(
        "http_connections_refused_total",
        "HTTP connections closed unserved because the connection limit was reached",
    )
    .expect("valid metric");
    let llm_answers = IntCounterVec::new(
        Opts::new(
            "llm_answers_total",
            "Generated answers, by outcome: generated, or why the extractive answer went out instead \
             (timeout, error, refused, uncited; rewrite_* for follow-up rewriting)",
        ),
        &["outcome"],
    )
    .expect("valid metric");
    let llm_seconds = prometheus::Histogram::with_opts(
        HistogramOpts::new("llm_seconds", "Time the language model took for an answer")
            .buckets(vec![0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0]),
    )
    .expect("valid metric");
    for collector in [
        Box::new(llm_answers.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(llm_seconds.clone()),
        Box::new(stage_seconds.clone()),
        Box::new(answer_seconds.clone()),
        Box::new(questions.clone()),
        Box::new(feedback.clone()),
        Box::new(telegram_errors.clone()),
        Box::new(telegram_retries.clone()),
        Box::new(cache.clone()),
        Box::new(cache_hit_ratio.clone()),
        Box::new(index.clone()),
        Box::new(outbox_depth.clone()),
        Box::new(http_refused.clone()),
    ] {
        registry.register(collector).expect("each metric registered once");
    }
    // Resident memory, CPU time, open files: sputnik_process_*.
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
        .expect("registered once");
    // Present from the start, so dashboards and alerts see zeros rather than nothing.
    for outcome in ["answered", "unanswered"] {
        questions.with_label_values(&[outcome]);
    }
    for kind in ["helpful", "unhelpful"] {
        feedback.with_label_values(&[kind]);
    }
    for kind in ["too_many_requests", "network", "server", "refused"] {
        telegram_errors.with_label_values(&[kind]);
    }
    for result in ["hit", "miss"] {
        cache.with_label_values(&[result]);
    }
    for outcome in ["generated", "timeout", "error", "refused", "uncited"] {
        llm_answers.with_label_values(&[outcome]);
    }
    Metrics {
        registry,
        stage_seconds,
        answer_seconds,
        questions,
        feedback,
        telegram_errors,
        telegram_retries,
        cache,
        cache_hit_ratio,
        index,
        outbox_depth,
        http_refused,
        llm_answers,
        llm_seconds,
    }
});

/// Times a stage from creation to drop.
#[derive(Debug)]
pub struct Timer {
    stage: Stage,
    started: Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        METRICS
            .stage_seconds
            .with_label_values(&[self.stage.label()])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

pub fn time(stage: Stage) -> Timer {
    Timer { stage, started: Instant::now() }
}

pub fn question(answered: bool, seconds: f64) {
    METRICS.questions.with_label_values(&[if answered { "answered" } else { "unanswered" }]).inc();
    METRICS.answer_seconds.observe(seconds);
}

pub fn feedback(helpful: bool) {
    METRICS.feedback.with_label_values(&[if helpful { "helpful" } else { "unhelpful" }]).inc();
}

pub fn telegram_error(kind: &str) {
    METRICS.telegram_errors.with_label_values(&[kind]).inc();
}

/// One generated answer's outcome (and, when it was produced, how long the model took).
pub fn llm_answer(outcome: &str) {
    METRICS.llm_answers.with_label_values(&[outcome]).inc();
}

pub fn llm_time(seconds: f64) {
    METRICS.llm_seconds.observe(seconds);
}

pub fn telegram_retry() {
    METRICS.telegram_retries.inc();
}

/// The registry in Prometheus' text format.
pub fn render() -> String {
    let mut buffer = Vec::new();
    TextEncoder::new().encode(&METRICS.registry.gather(), &mut buffer).expect("text encoding cannot fail");
    String::from_utf8(buffer).expect("the text format is UTF-8")
}
