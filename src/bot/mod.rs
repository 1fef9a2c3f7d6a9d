//! The Telegram adapter: long polling in, outbox out. It only translates — updates become
//! engine [`Event`]s, the engine's [`Action`]s become Bot API calls — and keeps the delivery
//! promises:
//! - an update is handled once: it is kept in the store's inbox before Telegram is told it
//!   arrived, and leaves the inbox in the transaction that queues its replies
//!   (`Store::commit_update`); chats are handled in parallel, each chat's updates in order
//!   (`intake`);
//! - a reply is never lost: the sender delivers the outbox in order, removing an item only once
//!   Telegram accepted it (or rejected it for good), retrying network errors and honouring
//!   `retry_after`;
//! - Telegram's limits hold: about one message a second per chat and thirty overall.
//!
//! Question text passes through here but is never logged.

mod intake;
mod sender;

use std::sync::Arc;
use std::time::Duration;

use teloxide::payloads::SetMyCommandsSetters;
use teloxide::prelude::Requester;
use teloxide::types::{BotCommand, BotCommandScope, ChatId, Recipient};
use teloxide::{Bot, RequestError};
use tokio_util::sync::CancellationToken;

use crate::chat::{Clock, Engine, EngineSettings, system_clock};
use crate::config::{Settings, parse_duration_seconds};
use crate::store::{Language, Role};
use crate::{App, Error};

#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error(
        "telegram.bot_token is not set: put the token from @BotFather in the configuration or in \
         SPUTNIK_TELEGRAM_TOKEN (meanwhile, `sputnik chat` talks to the knowledge base in the terminal)"
    )]
    NoToken,
    #[error("telegram.api_url {url:?} is not a URL: {reason}")]
    BadApiUrl { url: String, reason: String },
    #[error("Telegram rejected the bot token (getMe failed: {0})")]
    Unauthorized(String),
    #[error("cannot reach the Telegram Bot API at {url}: {reason}")]
    Unreachable { url: String, reason: String },
}

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
        return Err(Error::Bot(BotError::NoToken));
    }
    let api_url: url::Url = telegram.api_url.parse().map_err(|e: url::ParseError| BotError::BadApiUrl {
        url: telegram.api_url.clone(),
        reason: e.to_string(),
    })?;
    // Two clients: every request is abandoned (and retried) after request_timeout_seconds; a
    // long poll may take its wait on top of that.
    let request_timeout = Duration::from_secs(telegram.request_timeout_seconds);
    let client = |timeout: Duration| {
        teloxide::net::default_reqwest_settings()
            .timeout(timeout)
            .build()
            .map_err(|e| BotError::Unreachable { url: telegram.api_url.clone(), reason: e.to_string() })
    };
    let bot =
        Bot::with_client(telegram.bot_token.expose(), client(request_timeout)?).set_api_url(api_url.clone());
    let poller = Bot::with_client(
        telegram.bot_token.expose(),
        client(request_timeout + Duration::from_secs(telegram.poll_timeout_seconds.into()))?,
    )
    .set_api_url(api_url);
    let me = match bot.get_me().await {
        Ok(me) => me,
        Err(RequestError::Api(e)) => return Err(BotError::Unauthorized(e.to_string()).into()),
        Err(e) => {
            return Err(BotError::Unreachable { url: telegram.api_url.clone(), reason: e.to_string() }.into());
        }
    };
    let username = me.user.username.clone().unwrap_or_default();
    tracing::info!(bot = %username, "connected to Telegram");

    let engine_settings = EngineSettings {
        questions_per_minute: settings.chat.questions_per_minute,
        burst: settings.chat.burst,
        bot_username: if telegram.bot_username.is_empty() {
            username.clone()
        } else {
            telegram.bot_username.clone()
        },
        invite_lifetime: parse_duration_seconds(&settings.chat.invite_lifetime).map_err(Error::Usage)?,
    };
    let retention_days = settings.chat.retention_days;
    let http_listener = match settings.http.listen.trim() {
        "" => None,
        listen => Some((
            crate::http::bind(listen).await?,
            crate::http::api::admin_token(settings.http.admin_token.expose(), &settings.data_dir)?,
        )),
    };
    let poll_timeout = telegram.poll_timeout_seconds;
    // A refused endpoint (not local while llm.local_only) stops the start with the reason.
    let llm = crate::llm::Client::new(&settings.llm).map_err(|e| Error::Usage(e.to_string()))?;
    let limits = sender::Limits {
        per_chat_interval: Duration::from_millis(telegram.per_chat_interval_ms),
        per_second: telegram.messages_per_second,
    };
    let app = tokio::task::spawn_blocking(move || App::open(settings)).await.map_err(join_error)??;
    app.store().set_bot_username(&username)?;
    let app = Arc::new(app);
    let engine = Arc::new(Engine::new(app.clone(), engine_settings, options.clock.clone()));

    if let Err(e) = publish_commands(&bot, &app).await {
        // The menu is a convenience: the bot works without it.
        tracing::warn!(error = %e, "could not set the command menus");
    }

    let wake = Arc::new(tokio::sync::Notify::new());
    let sender_stop = CancellationToken::new();
    let sender =
        tokio::spawn(sender::run(bot.clone(), app.clone(), limits, llm, wake.clone(), sender_stop.clone()));
    let purge = tokio::spawn(purge_loop(app.clone(), retention_days, shutdown.clone()));
    let scheduler = tokio::spawn(schedule_loop(app.clone(), options, wake.clone(), shutdown.clone()));
    let http = http_listener.map(|(listener, token)| {
        tokio::spawn(crate::http::serve(listener, app.clone(), token, shutdown.clone()))
    });

    // Under systemd (Type=notify) the unit becomes active now: Telegram answered, the store and
    // indexes are open, HTTP is bound, and every loop is running.
    notify_systemd(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("answering in Telegram")]);
    tracing::info!("ready");

    intake::run(&poller, &bot, &app, &engine, &wake, poll_timeout, &shutdown).await;

    // Intake has stopped: give the sender a moment to deliver what is queued, then stop it.
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down: delivering queued messages");
    wake.notify_one();
    let drained = wait_for_empty_outbox(&app, Duration::from_secs(5)).await;
    sender_stop.cancel();
    let _ = sender.await;
    let _ = purge.await;
    let _ = scheduler.await;
    if let Some(http) = http {
        let _ = http.await;
    }
    if !drained {
        tracing::warn!("some messages are still queued; they will be sent after the next start");
    }
    // The engine holds the last reference to the app besides ours: dropping both closes redb.
    drop(engine);
    drop(app);
    tracing::info!("stopped");
    Ok(())
}

/// Command menus in both languages, and the admin menu for each admin's chat.
async fn publish_commands(bot: &Bot, app: &Arc<App>) -> Result<(), RequestError> {
    let menu = |language: Language, admin: bool| {
        let ru = language == Language::Ru;
        let mut commands = vec![
            BotCommand::new("help", if ru { "Что умеет помощник" } else { "What the assistant can do" }),
            BotCommand::new("plan", if ru { "Мой план онбординга" } else { "My onboarding plan" }),
            BotCommand::new(
                "sources",
                if ru {
                    "Источники последнего ответа"
                } else {
                    "Sources of the last answer"
                },
            ),
            BotCommand::new(
                "lang",
                if ru { "Язык: /lang ru или /lang en" } else { "Language: /lang ru or /lang en" },
            ),
        ];
        if admin {
            commands.push(BotCommand::new(
                "stats",
                if ru { "Статистика базы знаний" } else { "Knowledge base figures" },
            ));
            commands.push(BotCommand::new(
                "invite",
                if ru {
                    "Пригласить: /invite Имя; Отдел"
                } else {
                    "Invite: /invite Name; Department"
                },
            ));
        }
        commands
    };
    bot.set_my_commands(menu(Language::En, false)).await?;
    bot.set_my_commands(menu(Language::Ru, false)).language_code("ru").await?;
    let admins: Vec<(i64, Language)> = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || {
            app.store()
                .employees()
                .map(|all| {
                    all.into_iter()
                        .filter(|e| e.role == Role::Admin && e.active)
                        .filter_map(|e| e.telegram_id.map(|id| (id, e.language.unwrap_or(Language::En))))
                        .collect()
                })
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default()
    };
    for (chat, language) in admins {
        let scope = BotCommandScope::Chat { chat_id: Recipient::Id(ChatId(chat)) };
        bot.set_my_commands(menu(language, true)).scope(scope).await?;
    }
    Ok(())
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
