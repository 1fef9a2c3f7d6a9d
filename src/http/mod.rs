//! The service's HTTP side, next to the bot: `/livez` (the process answers), `/readyz` (the
//! store, the indexes and the model answer), `/metrics` (Prometheus text format) and the admin
//! API under `/api/` (see [`api`]). It listens on `http.listen`, 127.0.0.1:8080 by default.
//!
//! Bounded so that no client can take it out of monitoring: `/readyz` answers from a state a
//! background task keeps current (a flood of readiness probes costs no thread and no model
//! call); connections are limited below the process's open-file limit, and one that sends no
//! request head within [`HEADER_TIMEOUT`] (idle keep-alive, half-sent) is closed.

pub mod api;
mod settings;
pub use settings::HttpSettings;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::{App, Error, metrics};

pub(crate) type Shared = Arc<App>;

/// Binds `listen`; a clear error when the address is bad or taken.
pub async fn bind(listen: &str) -> Result<tokio::net::TcpListener, Error> {
    let address: SocketAddr = listen
        .parse()
        .map_err(|_| Error::Usage(format!("http.listen {listen:?} is not an address like 127.0.0.1:8080")))?;
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Error::Usage(format!("cannot listen on {address} (http.listen): {e}")))
}

/// How long a connection may take to send a request head, and stay idle between requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the readiness `/readyz` reports is refreshed.
const READINESS_INTERVAL: Duration = Duration::from_secs(5);

/// Connections served at once: half the open-file limit (the rest is for the store, the index,
/// the model and Telegram), between 16 and 1,024.
pub fn connection_limit() -> usize {
    let files = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(1024);
    usize::try_from(files / 2).unwrap_or(1024).clamp(16, 1024)
}

/// Serves until `shutdown` is cancelled; `/api/` answers requests bearing `token`; `/readyz`
/// includes `telegram`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Shared,
    token: String,
    telegram: TelegramState,
    shutdown: CancellationToken,
) {
    let max_upload = app.settings().ingest.max_file_size.as_u64() as usize;
    // The first check is done before the first connection is accepted: /readyz never answers
    // "starting" once the service has said it is ready.
    let readiness = Readiness::default();
    let first = tokio::task::spawn_blocking({
        let app = app.clone();
        move || check_readiness(&app, None)
    })
    .await;
    let files = match first {
        Ok((parts, files)) => {
            readiness.set(parts);
            files
        }
        Err(_) => None,
    };
    tokio::spawn(keep_readiness_current(app.clone(), readiness.clone(), files, shutdown.clone()));
    let router = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/dashboard", get(dashboard))
        .route("/readyz", get(readyz).with_state((readiness, telegram)))
        .route("/metrics", get(metrics_text))
        .with_state(app.clone())
        .merge(api::router(app, &token, max_upload));
    let limit = connection_limit();
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, connections = limit, "HTTP listening");
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(limit));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, most likely: let connections finish before retrying.
                tracing::warn!(error = %e, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Full: closed at once rather than queued, so the file limit is never reached;
            // slots free up within HEADER_TIMEOUT as idle connections are closed.
            metrics::METRICS.http_refused.inc();
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(10), connection).await;
                }
            }
        });
    }
    // Requests under way finish (an upload being applied, a backup being streamed).
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// The read-only dashboard: one page, embedded in the binary; its data comes from `/api/report`
/// with the admin token the page asks for.
async fn dashboard() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")],
        include_str!("../../assets/dashboard/index.html"),
    )
        .into_response()
}

/// The service's connection to Telegram as `/readyz` reports it: "ok" once Telegram answered,
/// otherwise why not (the service keeps retrying meanwhile).
#[derive(Clone, Debug)]
pub struct TelegramState(Arc<RwLock<String>>);

impl Default for TelegramState {
    fn default() -> Self {
        TelegramState(Arc::new(RwLock::new("connecting".into())))
    }
}

impl TelegramState {
    pub fn set(&self, state: impl Into<String>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = state.into();
    }

    fn get(&self) -> String {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What `/readyz` answers: the last check of each part, kept current by
/// [`keep_readiness_current`]; `None` until the first check has run.
#[derive(Clone, Default)]
struct Readiness(Arc<RwLock<Option<serde_json::Value>>>);

impl Readiness {
    fn set(&self, parts: serde_json::Value) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(parts);
    }
}

/// The model files' (size, modification time) when last hashed, and what the hash said.
type ModelFilesState = (Vec<(u64, std::time::SystemTime)>, &'static str);

/// Checks each part: counts in the store, the index's chunk count, an embedding from the model,
/// and the model's files against their checksums (again only when a file's size or modification
/// time changed: the weights are mapped from disk, so a file damaged in place changes what the
/// model computes).
fn check_readiness(
    app: &Shared,
    previous: Option<ModelFilesState>,
) -> (serde_json::Value, Option<ModelFilesState>) {
    let store = app.store().counts().map(|_| "ok").unwrap_or("failing");
    let index = app.stats().map(|_| "ok").unwrap_or("failing");
    let (model, files) = match app.embedder() {
        Some(embedder) => {
            let files = model_files_state(&app.settings().embed, previous);
            let model = match (embedder.embed_raw(vec!["ready".into()]).is_ok(), files.1) {
                (false, _) => "failing",
                (true, verdict) => verdict,
            };
            (model, Some(files))
        }
        None => ("off", None),
    };
    (serde_json::json!({"store": store, "index": index, "model": model}), files)
}

/// Refreshes `readiness` every [`READINESS_INTERVAL`] until `shutdown`.
async fn keep_readiness_current(
    app: Shared,
    readiness: Readiness,
    mut files: Option<ModelFilesState>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(READINESS_INTERVAL) => {}
        }
        let app = app.clone();
        let previous = files.take();
        let parts = match tokio::task::spawn_blocking(move || check_readiness(&app, previous)).await {
            Ok((parts, checked)) => {
                files = checked;
                parts
            }
            Err(_) => serde_json::json!({"store": "failing", "index": "failing", "model": "failing"}),
        };
        readiness.set(parts);
    }
}

/// The model files' (size, modification time) and whether they matched their checksums; the
/// files are hashed again only when those change.
fn model_files_state(
    settings: &crate::embed::EmbedSettings,
    previous: Option<ModelFilesState>,
) -> ModelFilesState {
    let Some(profile) = crate::embed::ModelProfile::named(settings.model.trim()) else {
        return (Vec::new(), "failing");
    };
    let stamps: Vec<(u64, std::time::SystemTime)> = profile
        .run_time_files(&settings.models_dir)
        .into_iter()
        .filter_map(|(_, path)| std::fs::metadata(path).ok())
        .map(|m| (m.len(), m.modified().unwrap_or(std::time::UNIX_EPOCH)))
        .collect();
    if let Some((seen, verdict)) = previous
        && seen == stamps
    {
        return (seen, verdict);
    }
    let verdict = match profile.verify_files(&settings.models_dir) {
        Ok(_) => "ok",
        Err(e) => {
            tracing::error!(error = %e, "the model's files do not match their checksums");
            "damaged"
        }
    };
    (stamps, verdict)
}

async fn readyz(State((readiness, telegram)): State<(Readiness, TelegramState)>) -> Response {
    let parts = readiness.0.read().unwrap_or_else(|p| p.into_inner()).clone();
    match parts {
        Some(mut parts) => {
            if let Some(parts) = parts.as_object_mut() {
                parts.insert("telegram".into(), telegram.get().into());
            }
            let ready = parts.as_object().is_some_and(|p| p.values().all(|v| v == "ok" || v == "off"));
            let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (status, axum::Json(parts)).into_response()
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"starting": true})))
            .into_response(),
    }
}

async fn metrics_text(State(app): State<Shared>) -> Response {
    let refreshed = tokio::task::spawn_blocking(move || -> Result<(), Error> {
        let stats = app.stats()?;
        let index = &metrics::METRICS.index;
        index.with_label_values(&["documents"]).set(stats.documents as i64);
        index.with_label_values(&["chunks"]).set(stats.chunks as i64);
        index.with_label_values(&["indexed_chunks"]).set(stats.indexed_chunks as i64);
        index.with_label_values(&["vectors"]).set(stats.vectors as i64);
        index.with_label_values(&["store_bytes"]).set(stats.store_bytes as i64);
        index.with_label_values(&["index_bytes"]).set(stats.index_bytes as i64);
        if let Some(cache) = stats.query_cache {
            metrics::METRICS.cache.with_label_values(&["hit"]).set(cache.hits as i64);
            metrics::METRICS.cache.with_label_values(&["miss"]).set(cache.misses as i64);
            let lookups = cache.hits + cache.misses;
            metrics::METRICS.cache_hit_ratio.set(if lookups == 0 {
                0.0
            } else {
                cache.hits as f64 / lookups as f64
            });
        }
        metrics::METRICS.outbox_depth.set(app.store().outbox_len()? as i64);
        Ok(())
    })
    .await;
    if !matches!(refreshed, Ok(Ok(()))) {
        tracing::warn!("could not refresh the store-based metrics");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::render()).into_response()
}
