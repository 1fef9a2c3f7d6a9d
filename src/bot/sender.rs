//! Delivers the outbox to Telegram within its limits: in order per chat, chats in parallel,
//! about one message a second per chat and a configurable total per second. A 429 waits its
//! `retry_after`; a network error leaves the item queued for the next round (with back-off); a
//! permanent refusal (blocked bot, bad request) is logged once and dropped so it cannot stall
//! the queue.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};
use teloxide::payloads::{
    AnswerCallbackQuerySetters, EditMessageReplyMarkupSetters, EditMessageTextSetters, SendMessageSetters,
};
use teloxide::prelude::Requester;
use teloxide::types::{CallbackQueryId, InlineKeyboardButton, InlineKeyboardMarkup, MessageId, ParseMode};
use teloxide::{Bot, RequestError};
use tokio_util::sync::CancellationToken;

use super::tg;
use crate::App;
use crate::answer::generate;
use crate::reply::{Action, InlineButton};
use crate::store::ChatId;

/// How fast messages may go out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub per_chat_interval: Duration,
    pub per_second: u32,
}

const BATCH: usize = 200;

enum Delivery {
    Done,
    /// Telegram refused it for good; it is dropped.
    Refused,
    /// Try again later (network trouble).
    Later,
}

pub(crate) async fn run(
    bot: Bot,
    app: Arc<App>,
    limits: Limits,
    llm: Option<crate::llm::Client>,
    wake: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    // A burst of a tenth of the rate at most, so no second ever sees much more than the limit.
    let rate = NonZeroU32::new(limits.per_second.max(1)).expect("at least one");
    let burst = NonZeroU32::new((limits.per_second / 10).max(1)).expect("at least one");
    let global: Arc<DefaultDirectRateLimiter> =
        Arc::new(governor::RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)));
    let per_chat: Arc<DefaultKeyedRateLimiter<ChatId>> = Arc::new(governor::RateLimiter::keyed(
        Quota::with_period(limits.per_chat_interval.max(Duration::from_millis(1)))
            .expect("a positive period"),
    ));
    let mut backoff = Duration::from_millis(200);
    while !stop.is_cancelled() {
        let app_ref = app.clone();
        let batch: Vec<(u64, Action)> =
            match tokio::task::spawn_blocking(move || app_ref.store().outbox(BATCH)).await {
                Ok(Ok(batch)) => batch,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    Vec::new()
                }
                Err(_) => return,
            };
        if batch.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            continue;
        }
        // Order matters within a chat only: each chat's items go out in sequence, chats in
        // parallel, so one slow conversation never holds up the others.
        let mut by_chat: BTreeMap<ChatId, Vec<(u64, Action)>> = BTreeMap::new();
        for (id, action) in batch {
            by_chat.entry(chat_of(&action)).or_default().push((id, action));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (chat, items) in by_chat {
            let (bot, app, global, per_chat) = (bot.clone(), app.clone(), global.clone(), per_chat.clone());
            let llm = llm.clone();
            tasks.spawn(async move {
                for (id, action) in items {
                    if needs_pacing(&action) {
                        per_chat.until_key_ready(&chat).await;
                    }
                    global.until_ready().await;
                    let delivered = match &action {
                        Action::Generate(generation) => {
                            generate(&bot, llm.as_ref(), generation, &per_chat, &global).await
                        }
                        _ => deliver(&bot, &action).await,
                    };
                    match delivered {
                        Delivery::Later => return false,
                        outcome @ (Delivery::Done | Delivery::Refused) => {
                            let record = match &action {
                                Action::Broadcast { broadcast, chat, .. } => {
                                    Some((*broadcast, *chat, matches!(outcome, Delivery::Done)))
                                }
                                _ => None,
                            };
                            let app = app.clone();
                            let _ =
                                tokio::task::spawn_blocking(move || app.store().outbox_delivered(id, record))
                                    .await;
                        }
                    }
                }
                true
            });
        }
        let mut all_delivered = true;
        while let Some(result) = tasks.join_next().await {
            all_delivered &= result.unwrap_or(false);
        }
        if all_delivered {
            backoff = Duration::from_millis(200);
        } else {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}

fn chat_of(action: &Action) -> ChatId {
    match action {
        Action::Typing { chat }
        | Action::Send { chat, .. }
        | Action::Broadcast { chat, .. }
        | Action::Edit { chat, .. }
        | Action::EditButtons { chat, .. } => *chat,
        Action::Generate(generation) => generation.chat,
        // Button answers are not chat messages; group them on their own.
        Action::AnswerButton { .. } => ChatId(0),
    }
}

/// Only messages count against the per-chat limit.
fn needs_pacing(action: &Action) -> bool {
    matches!(action, Action::Send { .. } | Action::Broadcast { .. })
}

/// Two buttons share a row (👍 / 👎); longer lists (a checklist's tasks) get a row each.
fn keyboard(buttons: &[InlineButton]) -> InlineKeyboardMarkup {
    let button = |b: &InlineButton| InlineKeyboardButton::callback(b.label.clone(), b.data.clone());
    if buttons.len() <= 2 {
        InlineKeyboardMarkup::new(vec![buttons.iter().map(button).collect::<Vec<_>>()])
    } else {
        InlineKeyboardMarkup::new(buttons.iter().map(|b| vec![button(b)]).collect::<Vec<_>>())
    }
}

/// One action, retrying while Telegram says to wait.
async fn deliver(bot: &Bot, action: &Action) -> Delivery {
    loop {
        let result = match action {
            Action::Typing { chat } => {
                bot.send_chat_action(tg(*chat), teloxide::types::ChatAction::Typing).await.map(|_| ())
            }
            Action::Send { chat, html, buttons } => {
                let mut request = bot.send_message(tg(*chat), html.clone()).parse_mode(ParseMode::Html);
                if !buttons.is_empty() {
                    request = request.reply_markup(keyboard(buttons));
                }
                request.await.map(|_| ())
            }
            Action::Broadcast { chat, html, .. } => {
                bot.send_message(tg(*chat), html.clone()).parse_mode(ParseMode::Html).await.map(|_| ())
            }
            Action::Edit { chat, message_id, html, buttons } => bot
                .edit_message_text(tg(*chat), MessageId(*message_id), html.clone())
                .parse_mode(ParseMode::Html)
                .reply_markup(keyboard(buttons))
                .await
                .map(|_| ()),
            Action::EditButtons { chat, message_id, buttons } => bot
                .edit_message_reply_markup(tg(*chat), MessageId(*message_id))
                .reply_markup(keyboard(buttons))
                .await
                .map(|_| ()),
            Action::AnswerButton { callback_id, text } => {
                let mut request = bot.answer_callback_query(CallbackQueryId(callback_id.clone()));
                if let Some(text) = text {
                    request = request.text(text.clone());
                }
                request.await.map(|_| ())
            }
            // Streamed by `generate`; here only its fallback could be meant.
            Action::Generate(generation) => {
                let mut result = Ok(());
                for part in &generation.fallback {
                    result = bot
                        .send_message(tg(generation.chat), part.clone())
                        .parse_mode(ParseMode::Html)
                        .await
                        .map(|_| ());
                }
                result
            }
        };
        match result {
            Ok(()) => return Delivery::Done,
            // An edit that changes nothing (a button pressed twice before the first edit showed)
            // has the effect it wanted: nothing to retry, nothing to report.
            Err(RequestError::Api(teloxide::ApiError::MessageNotModified)) => {
                tracing::debug!("an edit changed nothing; done");
                return Delivery::Done;
            }
            Err(RequestError::RetryAfter(seconds)) => {
                crate::metrics::telegram_error("too_many_requests");
                crate::metrics::telegram_retry();
                tracing::warn!(seconds = seconds.seconds(), "Telegram asked to slow down");
                tokio::time::sleep(seconds.duration()).await;
            }
            Err(RequestError::Network(e)) => {
                crate::metrics::telegram_error("network");
                crate::metrics::telegram_retry();
                tracing::warn!(error = %e, "sending to Telegram failed; will retry");
                return Delivery::Later;
            }
            Err(RequestError::Io(e)) => {
                crate::metrics::telegram_error("network");
                crate::metrics::telegram_retry();
                tracing::warn!(error = %e, "sending to Telegram failed; will retry");
                return Delivery::Later;
            }
            // A 5xx from Telegram's front proxies comes as an HTML page, not API JSON.
            Err(RequestError::InvalidJson { .. }) => {
                crate::metrics::telegram_error("server");
                crate::metrics::telegram_retry();
                tracing::warn!("Telegram answered with a server error; will retry");
                return Delivery::Later;
            }
            Err(e) => {
                crate::metrics::telegram_error("refused");
                tracing::error!(error = %e, chat = chat_of(action).0, "Telegram refused a message; dropping it");
                return Delivery::Refused;
            }
        }
    }
}

/// Writes a generated answer into the chat as the model streams it: the first text goes out as
/// a message, later text edits it at most once per `llm.edit_interval_ms` (and within the
/// per-chat and global limits), and the finished answer, checked and with its sources, replaces
/// it. If the model fails, times out, refuses or cites nothing, the extractive answer goes out
/// instead (replacing any partial text), and the failure is counted.
async fn generate(
    bot: &Bot,
    llm: Option<&crate::llm::Client>,
    generation: &crate::reply::Generation,
    per_chat: &DefaultKeyedRateLimiter<ChatId>,
    global: &DefaultDirectRateLimiter,
) -> Delivery {
    let chat = generation.chat;
    let result = match llm {
        None => Err((crate::llm::LlmError::Network("generated answers are off".into()), None)),
        Some(llm) => {
            let started = std::time::Instant::now();
            let interval = Duration::from_millis(llm.settings().edit_interval_ms);
            let (text_tx, mut text_rx) = tokio::sync::watch::channel(String::new());
            let messages = generate::answer_messages(&generation.request);
            let timeout = generation.time_left(Duration::from_secs(llm.settings().timeout_seconds));
            let stream = llm.stream(&messages, timeout, move |text| {
                let _ = text_tx.send(text.to_owned());
            });
            tokio::pin!(stream);
            let mut message: Option<MessageId> = None;
            let mut last_shown: Option<tokio::time::Instant> = None;
            // "typing…" until the first words are shown, renewed before Telegram drops it.
            let mut typing = tokio::time::interval(super::TYPING_RENEWAL);
            let result = loop {
                tokio::select! {
                    result = &mut stream => break result,
                    changed = text_rx.changed() => if changed.is_err() { break (&mut stream).await },
                    _ = typing.tick(), if message.is_none() => {
                        super::show_typing(bot, chat);
                        continue;
                    }
                }
                if let Some(shown) = last_shown {
                    tokio::select! {
                        result = &mut stream => break result,
                        _ = tokio::time::sleep_until(shown + interval) => {}
                    }
                }
                let text = text_rx.borrow_and_update().clone();
                if text.trim().is_empty() || text.trim().starts_with(generate::NO_ANSWER) {
                    continue;
                }
                let html = generate::partial_html(&text);
                per_chat.until_key_ready(&chat).await;
                global.until_ready().await;
                let shown = match message {
                    None => bot
                        .send_message(tg(chat), html)
                        .parse_mode(ParseMode::Html)
                        .await
                        .map(|sent| message = Some(sent.id)),
                    Some(id) => bot
                        .edit_message_text(tg(chat), id, html)
                        .parse_mode(ParseMode::Html)
                        .await
                        .map(|_| ()),
                };
                if let Err(e) = shown {
                    // A partial view is a courtesy: the finished answer is sent regardless.
                    crate::metrics::telegram_error("streaming");
                    tracing::debug!(error = %e, "could not show a partial answer");
                }
                last_shown = Some(tokio::time::Instant::now());
            };
            crate::metrics::llm_time(started.elapsed().as_secs_f64());
            match result {
                Ok(text) => generate::final_parts(generation, &text).map(|parts| (parts, message)),
                Err(e) => Err(e),
            }
            .map_err(|e| (e, message))
        }
    };
    let (parts, message) = match result {
        Ok((parts, message)) => {
            crate::metrics::llm_answer("generated");
            (parts, message)
        }
        Err((e, message)) => {
            crate::metrics::llm_answer(e.kind());
            tracing::warn!(error = %e, "no generated answer; sending the extractive one");
            (generation.fallback.clone(), message)
        }
    };
    let last = parts.len().saturating_sub(1);
    for (i, part) in parts.iter().enumerate() {
        let buttons = if i == last { generation.buttons.clone() } else { Vec::new() };
        let action = match (i, message) {
            (0, Some(id)) => {
                Action::Edit { chat, message_id: id.0, html: part.clone(), buttons: buttons.clone() }
            }
            _ => Action::Send { chat, html: part.clone(), buttons: buttons.clone() },
        };
        per_chat.until_key_ready(&chat).await;
        global.until_ready().await;
        match deliver(bot, &action).await {
            Delivery::Done => {}
            Delivery::Later => return Delivery::Later,
            // Telegram could not take the HTML: the same text, plain.
            Delivery::Refused => {
                let plain = crate::i18n::escape_html(&crate::answer::strip_tags(part));
                let action = match action {
                    Action::Edit { chat, message_id, buttons, .. } => {
                        Action::Edit { chat, message_id, html: plain, buttons }
                    }
                    _ => Action::Send { chat, html: plain, buttons },
                };
                if let Delivery::Later = deliver(bot, &action).await {
                    return Delivery::Later;
                }
            }
        }
    }
    Delivery::Done
}
