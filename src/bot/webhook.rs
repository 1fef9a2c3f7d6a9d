//! Telegram in by webhook: Telegram posts each update to `telegram.webhook_url`, and a load
//! balancer spreads the posts over every replica, each of which handles what it receives.
//!
//! A post is checked (the secret header, a body of at most [`MAX_UPDATE_BYTES`] that is an
//! update), kept in the store's inbox — unless the ledger of handled updates or the inbox already
//! has it: Telegram posting again, or to a second replica — and only then answered 200, so a
//! replica that dies before the answer loses nothing (Telegram posts it again). It is then handled
//! by this replica's worker for its chat, as a polled update is. An update whose replica died
//! after the 200 stays in the inbox: the replica that serves as leader handles what has waited
//! there for `telegram.webhook_takeover_seconds`, and the store commits an update's replies once
//! however many replicas handled it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use teloxide::Bot;
use teloxide::types::Update;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::intake::Workers;
use crate::App;
use crate::chat::Engine;

/// The largest post taken: an update is a few kilobytes (a document is sent by reference).
const MAX_UPDATE_BYTES: usize = 1024 * 1024;

/// The header Telegram sends the webhook's secret in.
const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Where the posts arrive.
pub(crate) struct Webhook {
    pub listener: tokio::net::TcpListener,
    /// The path of `telegram.webhook_url`.
    pub path: String,
    pub secret: String,
    /// `telegram.webhook_takeover_seconds`.
    pub takeover: Duration,
}

struct Receiver {
    app: Arc<App>,
    workers: Arc<Workers>,
    /// blake3 of the secret: compared in constant time.
    secret: blake3::Hash,
}

/// Receives posts until `shutdown` (then stops taking them, so the load balancer sends them to
/// another replica, and waits for the updates being handled); `leading` says whether this
/// replica is the one that sweeps up orphaned updates.
pub(crate) async fn run(
    webhook: Webhook,
    bot: &Bot,
    app: &Arc<App>,
    engine: &Arc<Engine>,
    wake: &Arc<Notify>,
    leading: Arc<AtomicBool>,
    shutdown: &CancellationToken,
) {
    let receiver = Arc::new(Receiver {
        app: app.clone(),
        workers: Workers::start(bot, app, engine, wake, shutdown),
        secret: blake3::hash(webhook.secret.as_bytes()),
    });
    let sweeper = tokio::spawn(sweep(receiver.clone(), webhook.takeover, leading, shutdown.clone()));
    let router = axum::Router::new()
        .route(&webhook.path, axum::routing::post(receive))
        .layer(DefaultBodyLimit::max(MAX_UPDATE_BYTES))
        .with_state(receiver.clone());
    let stopped = shutdown.clone();
    if let Err(e) = axum::serve(webhook.listener, router)
        .with_graceful_shutdown(async move { stopped.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "the webhook receiver failed");
    }
    let _ = sweeper.await;
    receiver.workers.finish().await;
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let given = headers.get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    // blake3::Hash compares in constant time.
    if blake3::hash(given) != receiver.secret {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(update) = serde_json::from_slice::<Update>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let id = u64::from(update.id.0);
    let app = receiver.app.clone();
    match tokio::task::spawn_blocking(move || app.store().accept_update(id, &body)).await {
        Ok(Ok(true)) => {
            receiver.workers.dispatch(id, update);
            StatusCode::OK
        }
        // Received or handled before: acknowledged, not handled again.
        Ok(Ok(false)) => StatusCode::OK,
        // Not kept: Telegram posts it again.
        Ok(Err(e)) => {
            tracing::error!(error = %e, update = id, "cannot keep a received update");
            StatusCode::SERVICE_UNAVAILABLE
        }
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// On the leader, every `takeover / 2`: updates that have waited in the inbox for `takeover`
/// (counted from when a sweep first saw them) and are not being handled here were kept by a
/// replica that stopped before it answered them; they are handled here.
async fn sweep(
    receiver: Arc<Receiver>,
    takeover: Duration,
    leading: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut first_seen: HashMap<u64, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(takeover / 2) => {}
        }
        if !leading.load(Ordering::SeqCst) {
            first_seen.clear();
            continue;
        }
        let app = receiver.app.clone();
        let pending = match tokio::task::spawn_blocking(move || app.store().inbox()).await {
            Ok(Ok(pending)) => pending,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read the inbox");
                continue;
            }
            Err(_) => return,
        };
        let now = Instant::now();
        let waiting: HashSet<u64> = pending.iter().map(|(id, _)| *id).collect();
        first_seen.retain(|id, _| waiting.contains(id));
        for (id, bytes) in pending {
            let seen = *first_seen.entry(id).or_insert(now);
            if now.duration_since(seen) < takeover || receiver.workers.has(id) {
                continue;
            }
            match serde_json::from_slice::<Update>(&bytes) {
                Ok(update) => {
                    tracing::info!(update = id, "handling an update another replica kept but did not answer");
                    receiver.workers.dispatch(id, update);
                }
                Err(e) => {
                    tracing::error!(error = %e, update = id, "an update in the inbox cannot be read; dropped");
                    let app = receiver.app.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        app.store().commit_update::<crate::reply::Action>(id, &[])
                    })
                    .await;
                }
            }
        }
    }
}
