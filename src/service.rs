//! The service (`sputnik serve`): starts the parts in order — the knowledge base open, HTTP
//! running (`/livez` answers; `/readyz` says why not while Telegram cannot be reached), Telegram
//! reached (retried with growing waits: a network blip at boot is not a crash), the command menus
//! published, the sender, the retention purge and the onboarding scheduler — tells systemd it is
//! ready, then receives updates until asked to stop; on the way down it stops intake first, lets the sender deliver what is queued for a
//! short grace period, and closes the store. `bot/` speaks Telegram; this module only runs things.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::bot::UpdateMode;
use crate::chat::{Clock, Engine, EngineSettings, system_clock};
use crate::config::Settings;
use crate::setting::parse_duration_seconds;
use crate::store::{Notice, ServiceLock};
use crate::{App, Error};

/// How the service keeps time; tests replace the clock to run weeks of schedule in seconds.
#[derive(Clone)]
pub struct ServeOptions {
    pub clock: Clock,
    /// How often the onboarding scheduler looks for messages that are due.
    pub schedule_every: Duration,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions").field("schedule_every", &self.schedule_every).finish_non_exhaustive()
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { clock: system_clock(), schedule_every: Duration::from_secs(60) }
    }
}

/// Runs the bot until `shutdown` is cancelled: stops polling first, lets the sender deliver
/// what is queued (for a short grace period), then closes the store.
pub async fn serve(settings: Settings, shutdown: CancellationToken) -> Result<(), Error> {
    serve_with(settings, shutdown, ServeOptions::default()).await
}

/// [`serve`] with its clock and schedule chosen by the caller.
pub async fn serve_with(
    settings: Settings,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> Result<(), Error> {
    let telegram = settings.telegram.clone();
    if telegram.bot_token.is_empty() {
        return Err(Error::Usage(crate::bot::BotError::NoToken.to_string()));
    }
    let retention_days = settings.chat.retention_days;
    let http_listener = match settings.http.listen.trim() {
        "" => None,
        listen => Some((
            crate::http::bind(listen).await?,
            crate::http::api::admin_token(settings.http.admin_token.expose(), &settings.data_dir)?,
        )),
    };
    let webhook_listener = match telegram.mode {
        UpdateMode::Polling => None,
        UpdateMode::Webhook => Some(crate::http::bind(telegram.webhook_listen.trim()).await?),
    };
    // A refused endpoint (not local while llm.local_only) stops the start with the reason.
    let llm = crate::llm::Client::new(&settings.llm).map_err(|e| Error::Usage(e.to_string()))?;
    let limits = crate::bot::Limits {
        per_chat_interval: Duration::from_millis(telegram.per_chat_interval_ms),
        per_second: telegram.messages_per_second,
    };
    let invite_lifetime = parse_duration_seconds(&settings.chat.invite_lifetime).map_err(Error::Usage)?;
    let (questions_per_minute, burst) = (settings.chat.questions_per_minute, settings.chat.burst);
    let app = tokio::task::spawn_blocking(move || App::open(settings)).await.map_err(join_error)??;
    let app = Arc::new(app);

    // HTTP first: /livez answers and /readyz says why the service is not ready while Telegram
    // cannot be reached yet.
    let telegram_state = crate::http::TelegramState::default();
    let http = http_listener.map(|(listener, token)| {
        tokio::spawn(crate::http::serve(
            listener,
            app.clone(),
            token,
            telegram_state.clone(),
            shutdown.clone(),
        ))
    });
    // Replicas of a PostgreSQL store keep their indexes up with what the others write.
    let follower =
        app.store().is_postgres().then(|| tokio::spawn(follow_loop(app.clone(), shutdown.clone())));
    let background = Background { http, follower };

    // Long polling: on a PostgreSQL store one replica polls; the others stand by until it stops.
    let polling_lock = match telegram.mode {
        UpdateMode::Polling => match stand_by(&app, &shutdown, Some(&telegram_state)).await? {
            Some(lock) => Some(lock),
            None => {
                background.stop().await;
                return Ok(());
            }
        },
        UpdateMode::Webhook => None,
    };
    let Some(crate::bot::Connected { bot, poller, username }) =
        connect_with_retries(&telegram, &telegram_state, &shutdown).await?
    else {
        // Asked to stop before Telegram ever answered.
        background.stop().await;
        return Ok(());
    };
    app.store().set_bot_username(&username)?;
    let engine_settings = EngineSettings {
        questions_per_minute,
        burst,
        bot_username: if telegram.bot_username.is_empty() { username } else { telegram.bot_username.clone() },
        invite_lifetime,
    };
    let engine = Arc::new(Engine::new(app.clone(), engine_settings, options.clock.clone()));
    let wake = Arc::new(tokio::sync::Notify::new());
    let duty =
        Duty { app: app.clone(), bot: bot.clone(), limits, llm, retention_days, options, wake: wake.clone() };

    let (lost, app) = match (webhook_listener, polling_lock) {
        (None, Some(lock)) => {
            // A webhook left set (the service ran in webhook mode before) makes polls fail.
            if let Err(e) = crate::bot::delete_webhook(&bot).await {
                tracing::warn!(error = %e, "could not remove a webhook; polling may be refused");
            }
            let leader = duty.start(lock, &shutdown).await;
            // Under systemd (Type=notify) the unit becomes active now: Telegram answered, the
            // store and indexes are open, HTTP is bound, and every loop is running.
            notify_systemd(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status("answering in Telegram"),
            ]);
            tracing::info!("ready");
            crate::bot::receive(
                &poller,
                &bot,
                &app,
                &engine,
                &wake,
                telegram.poll_timeout_seconds,
                &shutdown,
            )
            .await;
            notify_systemd(&[sd_notify::NotifyState::Stopping]);
            (leader.stop(&app).await, app)
        }
        (Some(listener), _) => {
            let webhook = crate::bot::Webhook {
                listener,
                path: telegram.webhook_path(),
                secret: telegram.webhook_secret.expose().to_owned(),
                takeover: Duration::from_secs(telegram.webhook_takeover_seconds),
            };
            let leading = Arc::new(AtomicBool::new(false));
            let receiver = {
                let (bot, app, engine, wake, leading, shutdown) = (
                    bot.clone(),
                    app.clone(),
                    engine.clone(),
                    wake.clone(),
                    leading.clone(),
                    shutdown.clone(),
                );
                tokio::spawn(async move {
                    crate::bot::receive_webhook(webhook, &bot, &app, &engine, &wake, leading, &shutdown)
                        .await;
                })
            };
            notify_systemd(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status("answering by webhook"),
            ]);
            tracing::info!("ready: receiving updates by webhook");
            // One replica points Telegram at the webhook and sends what every replica queued.
            let leader = match stand_by(&app, &shutdown, None).await? {
                Some(lock) => {
                    if let Err(e) = crate::bot::set_webhook(&bot, &telegram).await {
                        tracing::error!(error = %e, "could not point Telegram at the webhook");
                    }
                    leading.store(true, Ordering::SeqCst);
                    Some(duty.start(lock, &shutdown).await)
                }
                None => None,
            };
            shutdown.cancelled().await;
            notify_systemd(&[sd_notify::NotifyState::Stopping]);
            let _ = receiver.await;
            let lost = match leader {
                Some(leader) => leader.stop(&app).await,
                None => None,
            };
            (lost, app)
        }
        (None, None) => unreachable!("polling mode always holds its lock here"),
    };
    // The engine holds the last reference to the app besides ours: dropping both closes redb.
    drop(engine);
    drop(app);
    background.stop().await;
    if let Some(reason) = lost {
        return Err(Error::Store(crate::store::StoreError::Postgres(format!(
            "this replica lost its turn to serve Telegram ({reason}) and stopped, so that a stand-by can \
             take over; started again, it stands by"
        ))));
    }
    tracing::info!("stopped");
    Ok(())
}

/// Tasks that run as long as the service: HTTP, and on PostgreSQL the follower.
struct Background {
    http: Option<tokio::task::JoinHandle<()>>,
    follower: Option<tokio::task::JoinHandle<()>>,
}

impl Background {
    async fn stop(self) {
        for task in [self.http, self.follower].into_iter().flatten() {
            let _ = task.await;
        }
    }
}

/// What the one replica that serves Telegram does besides receiving: the command menus, the
/// sender, the retention purge and the onboarding scheduler.
struct Duty {
    app: Arc<App>,
    bot: teloxide::Bot,
    limits: crate::bot::Limits,
    llm: Option<crate::llm::Client>,
    retention_days: u32,
    options: ServeOptions,
    wake: Arc<tokio::sync::Notify>,
}

/// The duties running, with the lock that grants them.
struct Leader {
    wake: Arc<tokio::sync::Notify>,
    sender: tokio::task::JoinHandle<()>,
    sender_stop: CancellationToken,
    purge: tokio::task::JoinHandle<()>,
    scheduler: tokio::task::JoinHandle<()>,
    watchdog: Option<tokio::task::JoinHandle<Option<String>>>,
    _lock: Arc<ServiceLock>,
}

impl Duty {
    async fn start(self, lock: ServiceLock, shutdown: &CancellationToken) -> Leader {
        let Duty { app, bot, limits, llm, retention_days, options, wake } = self;
        let lock = Arc::new(lock);
        let watchdog = app
            .store()
            .is_postgres()
            .then(|| tokio::spawn(watch_service_lock(lock.clone(), shutdown.clone())));
        // Replies other replicas queue go out as soon as they commit, not at the next look.
        listen_for(&app, Notice::Outbox, &wake).await;
        if let Err(e) = crate::bot::publish_commands(&bot, &app).await {
            // The menu is a convenience: the bot works without it.
            tracing::warn!(error = %e, "could not set the command menus");
        }
        let sender_stop = CancellationToken::new();
        let sender = tokio::spawn(crate::bot::deliver(
            bot,
            app.clone(),
            limits,
            llm,
            wake.clone(),
            sender_stop.clone(),
        ));
        let purge = tokio::spawn(purge_loop(app.clone(), retention_days, shutdown.clone()));
        let scheduler = tokio::spawn(schedule_loop(app, options, wake.clone(), shutdown.clone()));
        Leader { wake, sender, sender_stop, purge, scheduler, watchdog, _lock: lock }
    }
}

impl Leader {
    /// Intake has stopped: gives the sender a moment to deliver what is queued, stops every
    /// duty and releases the lock. Returns why the lock was lost, if it was.
    async fn stop(self, app: &Arc<App>) -> Option<String> {
        tracing::info!("shutting down: delivering queued messages");
        self.wake.notify_one();
        let drained = wait_for_empty_outbox(app, Duration::from_secs(5)).await;
        self.sender_stop.cancel();
        let _ = self.sender.await;
        let _ = self.purge.await;
        let _ = self.scheduler.await;
        if !drained {
            tracing::warn!("some messages are still queued; they will be sent after the next start");
        }
        match self.watchdog {
            Some(watchdog) => {
                watchdog.abort();
                watchdog.await.ok().flatten()
            }
            None => None,
        }
    }
}

/// How often a stand-by replica asks whether it may serve, and the serving one checks it still
/// may.
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// Waits until this process may serve Telegram from the store (at once on redb; on PostgreSQL
/// when no other replica serves) and returns its lock; `None` when asked to stop meanwhile. A
/// replica that waited brings its indexes up to the store before it takes over.
/// `announce` (long polling, where standing by is all this replica does) is where to say so:
/// systemd hears it as the status, `/readyz` as the state of Telegram.
async fn stand_by(
    app: &Arc<App>,
    shutdown: &CancellationToken,
    announce: Option<&crate::http::TelegramState>,
) -> Result<Option<ServiceLock>, Error> {
    let mut waited = false;
    loop {
        let trying = app.clone();
        let lock = tokio::task::spawn_blocking(move || trying.store().try_service_lock())
            .await
            .map_err(join_error)??;
        if let Some(lock) = lock {
            if waited {
                let app = app.clone();
                let applied =
                    tokio::task::spawn_blocking(move || app.follow()).await.map_err(join_error)??;
                tracing::info!(
                    changes_applied = applied,
                    "taking over: no other replica serves Telegram now"
                );
            }
            return Ok(Some(lock));
        }
        if !waited {
            tracing::info!(
                "standing by: another replica serves Telegram from this store; taking over when it stops"
            );
            // Started, and doing its job: standing by.
            if let Some(telegram) = announce {
                telegram.set("standing by: another replica serves Telegram");
                notify_systemd(&[
                    sd_notify::NotifyState::Ready,
                    sd_notify::NotifyState::Status("standing by"),
                ]);
            }
            waited = true;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(STANDBY_POLL) => {}
        }
    }
}

/// Has the store wake `wake` on `notice` from any process; where it cannot (the connection
/// fails), the caller's regular look still finds what it waits for.
async fn listen_for(app: &Arc<App>, notice: Notice, wake: &Arc<tokio::sync::Notify>) {
    let (listening, waker) = (app.clone(), wake.clone());
    let listen = tokio::task::spawn_blocking(move || listening.store().wake_on(notice, waker)).await;
    if let Ok(Err(e)) = listen {
        tracing::warn!(error = %e, ?notice, "cannot listen for other replicas' notices; looking now and then");
    }
}

/// Applies what other replicas changed in the store to this one's indexes as soon as they
/// commit (PostgreSQL notifies every replica), and every [`STANDBY_POLL`] in case a notice was
/// lost with a connection: a document imported through any replica is found by every replica
/// within moments.
async fn follow_loop(app: Arc<App>, shutdown: CancellationToken) {
    let changed = Arc::new(tokio::sync::Notify::new());
    listen_for(&app, Notice::Changes, &changed).await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = changed.notified() => {}
            _ = tokio::time::sleep(STANDBY_POLL) => {}
        }
        let following = app.clone();
        let followed = tokio::task::spawn_blocking(move || {
            // Brings the listening connection back after a network cut or a server restart.
            if let Err(e) = following.store().keep_listening() {
                tracing::debug!(error = %e, "cannot listen for changes to the store");
            }
            following.follow()
        });
        match followed.await {
            Ok(Ok(0)) => {}
            Ok(Ok(changes)) => tracing::info!(changes, "applied changes other replicas made to the store"),
            Ok(Err(e)) => tracing::error!(error = %e, "could not follow the store; retrying"),
            Err(_) => return,
        }
    }
}

/// Checks that this replica still holds its turn to serve; when the lock's connection is lost,
/// stops the service (a stand-by may already have taken over) and says why.
async fn watch_service_lock(lock: Arc<ServiceLock>, shutdown: CancellationToken) -> Option<String> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(STANDBY_POLL) => {}
        }
        let checking = lock.clone();
        match tokio::task::spawn_blocking(move || checking.check()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "lost the turn to serve Telegram; stopping");
                shutdown.cancel();
                return Some(e.to_string());
            }
            Err(_) => return None,
        }
    }
}

/// Deletes conversation-log entries past the retention period, hourly.
async fn purge_loop(app: Arc<App>, retention_days: u32, shutdown: CancellationToken) {
    if retention_days == 0 {
        return;
    }
    loop {
        let app = app.clone();
        let cutoff = jiff::Timestamp::now().as_second() - i64::from(retention_days) * 86_400;
        match tokio::task::spawn_blocking(move || app.store().purge_questions_before(cutoff)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, retention_days, "purged old questions"),
            Ok(Err(e)) => tracing::error!(error = %e, "purging old questions failed"),
            Err(_) => return,
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Queues the onboarding messages that are due, every `schedule_every`, and wakes the sender.
async fn schedule_loop(
    app: Arc<App>,
    options: ServeOptions,
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let (app_ref, clock) = (app.clone(), options.clock.clone());
        let ticked = tokio::task::spawn_blocking(move || {
            let app = &*app_ref;
            let now = clock();
            let report = crate::onboarding::tick(app, app.calendar(), now)?;
            match crate::report::weekly_digest(app, now) {
                Ok(0) => {}
                Ok(digests) => tracing::info!(digests, "weekly digest queued for the admins"),
                Err(e) => tracing::error!(error = %e, "could not build the weekly digest; retrying"),
            }
            Ok::<_, Error>(report)
        })
        .await;
        match ticked {
            Ok(Ok(report)) if report.total() > 0 => {
                tracing::info!(
                    welcome = report.welcome,
                    introductions = report.introductions,
                    reminders = report.reminders,
                    escalations = report.escalations,
                    "onboarding messages queued"
                );
                wake.notify_one();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the onboarding scheduler failed; retrying"),
            Err(_) => return,
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(options.schedule_every) => {}
        }
    }
}

async fn wait_for_empty_outbox(app: &Arc<App>, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let app_ref = app.clone();
        let pending =
            tokio::task::spawn_blocking(move || app_ref.store().outbox_len().unwrap_or(0)).await.unwrap_or(0);
        if pending == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tells systemd about a state change when it started us with a notify socket; a no-op otherwise.
fn notify_systemd(states: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(states)
    {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::Usage(format!("a worker task failed: {e}"))
}

/// Longest wait between two attempts to reach Telegram at start.
const MOST_BACKOFF: Duration = Duration::from_secs(60);

/// Connects to Telegram, retrying with growing waits (1 s, 2 s, 4 s … at most a minute) while
/// it cannot be reached — a network blip at boot is not a reason to stop — and saying why in
/// `state` (for `/readyz`) and the log. A token Telegram rejects, or an API URL that is not
/// one, stops the start. `None`: `shutdown` came first.
async fn connect_with_retries(
    telegram: &crate::bot::TelegramSettings,
    state: &crate::http::TelegramState,
    shutdown: &CancellationToken,
) -> Result<Option<crate::bot::Connected>, Error> {
    let mut wait = Duration::from_secs(1);
    loop {
        match crate::bot::connect(telegram).await {
            Ok(connected) => {
                state.set("ok");
                return Ok(Some(connected));
            }
            Err(e @ crate::bot::BotError::Unreachable { .. }) => {
                let reason = e.to_string();
                tracing::warn!(error = %reason, retry_in = wait.as_secs(), "Telegram is not reachable yet; retrying");
                // systemd keeps waiting for READY=1 as long as the service keeps trying: each
                // attempt extends the start timeout past the next one.
                let extend = u32::try_from((wait + Duration::from_secs(60)).as_micros()).unwrap_or(u32::MAX);
                notify_systemd(&[
                    sd_notify::NotifyState::Status(&format!("waiting for Telegram: {reason}")),
                    sd_notify::NotifyState::ExtendTimeoutUsec(extend),
                ]);
                state.set(format!("unreachable: {reason}"));
            }
            Err(e) => return Err(Error::Usage(e.to_string())),
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(MOST_BACKOFF);
    }
}
