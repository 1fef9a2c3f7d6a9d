//! The service's HTTP side, next to the bot: `/livez` (the process answers), `/readyz` (the
//! store, the indexes and the model answer), `/metrics` (Prometheus text format) and the admin
//! API under `/api/` (see [`api`]). It listens on `http.listen`, 127.0.0.1:8080 by default.

pub mod api;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::{App, Error, metrics};

pub(crate) type Shared = Arc<RwLock<App>>;

/// Binds `listen`; a clear error when the address is bad or taken.
pub async fn bind(listen: &str) -> Result<tokio::net::TcpListener, Error> {
    let address: SocketAddr = listen
        .parse()
        .map_err(|_| Error::Usage(format!("http.listen {listen:?} is not an address like 127.0.0.1:8080")))?;
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| Error::Usage(format!("cannot listen on {address} (http.listen): {e}")))
}

/// Serves until `shutdown` is cancelled; `/api/` answers requests bearing `token`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Shared,
    token: String,
    shutdown: CancellationToken,
) {
    let max_upload = read(&app).settings().ingest.max_file_size.as_u64() as usize;
    let router = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/dashboard", get(dashboard))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(app.clone())
        .merge(api::router(app, &token, max_upload));
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "HTTP listening");
    }
    let result =
        axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    if let Err(e) = result {
        tracing::error!(error = %e, "the HTTP server stopped");
    }
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

pub(crate) fn read(app: &Shared) -> std::sync::RwLockReadGuard<'_, App> {
    app.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Touches each part: counts in the store, the index's chunk count, an embedding from the model.
async fn readyz(State(app): State<Shared>) -> Response {
    let checked = tokio::task::spawn_blocking(move || {
        let app = read(&app);
        let store = app.store().counts().map(|_| "ok").unwrap_or("failing");
        let index = app.stats().map(|_| "ok").unwrap_or("failing");
        let model = match app.embedder() {
            Some(embedder) => embedder.embed_raw(vec!["ready".into()]).map(|_| "ok").unwrap_or("failing"),
            None => "off",
        };
        serde_json::json!({"store": store, "index": index, "model": model})
    })
    .await;
    match checked {
        Ok(parts) => {
            let ready = parts.as_object().is_some_and(|p| p.values().all(|v| v != "failing"));
            let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            (status, axum::Json(parts)).into_response()
        }
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn metrics_text(State(app): State<Shared>) -> Response {
    let refreshed = tokio::task::spawn_blocking(move || -> Result<(), Error> {
        let app = read(&app);
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
