//! `sputnik serve`: the bot on a tokio runtime, stopped cleanly by SIGTERM or Ctrl-C.

use tokio_util::sync::CancellationToken;

use crate::cli::exit;
use crate::config::Settings;

pub(super) fn run(settings: Settings) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("sputnik").build()?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(stop_on_signal(shutdown.clone()));
        let result = crate::service::serve(settings, shutdown.clone()).await;
        signals.abort();
        result
    })?;
    Ok(exit::OK)
}

/// One token fed by SIGINT and SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
    shutdown.cancel();
}
