//! The Telegram adapter: long polling in, outbox out. It only translates — updates become
//! engine [`Event`](crate::chat::Event)s, the engine's [`Action`](crate::chat::Action)s become Bot
//! API calls — and keeps the delivery promises (the service itself is run by the `service` module):
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
mod settings;
mod webhook;
pub use settings::{TelegramSettings, UpdateMode};

pub(crate) use intake::run as receive;
pub(crate) use sender::{Limits, run as deliver};
pub(crate) use webhook::{Webhook, run as receive_webhook};

use std::sync::Arc;
use std::time::Duration;

use teloxide::payloads::SetMyCommandsSetters;
use teloxide::prelude::Requester;
use teloxide::types::{BotCommand, BotCommandScope, ChatId, Recipient};
use teloxide::{Bot, RequestError};

use crate::App;
use crate::chat::Command;
use crate::store::{Language, Role};

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

/// Points Telegram at `telegram.webhook_url` with its secret, for the updates Sputnik handles.
/// Setting the same again (a new leader taking over) changes nothing.
pub(crate) async fn set_webhook(bot: &Bot, telegram: &TelegramSettings) -> Result<(), RequestError> {
    use teloxide::payloads::SetWebhookSetters;
    use teloxide::types::AllowedUpdate;
    let url = url::Url::parse(&telegram.webhook_url).expect("validated with the settings");
    bot.set_webhook(url)
        .secret_token(telegram.webhook_secret.expose().to_owned())
        .allowed_updates(vec![AllowedUpdate::Message, AllowedUpdate::CallbackQuery])
        .await?;
    Ok(())
}

/// Removes a webhook, so long polling works (Telegram refuses polls while one is set).
pub(crate) async fn delete_webhook(bot: &Bot) -> Result<(), RequestError> {
    bot.delete_webhook().await?;
    Ok(())
}

/// Command menus in both languages, and the admin menu for each admin's chat.
pub(crate) async fn publish_commands(bot: &Bot, app: &Arc<App>) -> Result<(), RequestError> {
    let menu = |language: Language, admin: bool| -> Vec<BotCommand> {
        Command::menu(admin).map(|c| BotCommand::new(c.name(), c.description(language))).collect()
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

/// How often "typing…" is renewed while a reply is prepared (Telegram shows it for about 5 s).
pub(crate) const TYPING_RENEWAL: Duration = Duration::from_secs(4);

/// Awaits `work`, showing "typing…" in `chat` from now until it is done.
pub(crate) async fn typing_while<T>(
    bot: &Bot,
    chat: crate::store::ChatId,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    loop {
        show_typing(bot, chat);
        tokio::select! {
            done = &mut work => return done,
            _ = tokio::time::sleep(TYPING_RENEWAL) => {}
        }
    }
}

/// Shows "typing…" in `chat` without waiting on Telegram: a slow Bot API must not hold a reply
/// back, and the indicator is only useful right now (never queued).
pub(crate) fn show_typing(bot: &Bot, chat: crate::store::ChatId) {
    let bot = bot.clone();
    tokio::spawn(async move {
        let _ = bot.send_chat_action(tg(chat), teloxide::types::ChatAction::Typing).await;
    });
}

/// Our chat id as teloxide's.
pub(crate) fn tg(chat: crate::store::ChatId) -> ChatId {
    ChatId(chat.0)
}

/// A bot that Telegram answered: one client for requests, one for the long poll (which may take
/// its wait on top of the request timeout), and the bot's username.
pub(crate) struct Connected {
    pub bot: Bot,
    pub poller: Bot,
    pub username: String,
}

/// Checks the settings and asks Telegram who the bot is.
pub(crate) async fn connect(telegram: &TelegramSettings) -> Result<Connected, BotError> {
    if telegram.bot_token.is_empty() {
        return Err(BotError::NoToken);
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
        Err(RequestError::Api(e)) => return Err(BotError::Unauthorized(e.to_string())),
        Err(e) => {
            return Err(BotError::Unreachable { url: telegram.api_url.clone(), reason: e.to_string() });
        }
    };
    let username = me.user.username.clone().unwrap_or_default();
    tracing::info!(bot = %username, "connected to Telegram");
    Ok(Connected { bot, poller, username })
}
