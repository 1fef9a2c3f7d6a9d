//! Telegram in: long polling, a durable inbox, and one worker per chat.
//!
//! Each batch from `getUpdates` is written to the store's inbox (with the next offset) before the
//! next poll confirms it to Telegram, then handed to the worker of its chat. A worker handles its
//! chat's updates one at a time, in order; chats run in parallel, up to
//! [`MAX_PARALLEL_UPDATES`] at once, so one employee's slow answer (a model that hangs) never
//! holds up another's. Handling an update ends with the transaction that takes it out of the
//! inbox and queues its replies; at start the inbox is handled first, so an update received
//! before a crash is answered after it, once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use teloxide::payloads::GetUpdatesSetters;
use teloxide::prelude::Requester;
use teloxide::types::{AllowedUpdate, MaybeInaccessibleMessage, Update, UpdateKind};
use teloxide::{Bot, RequestError};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::App;
use crate::chat::{Engine, Event, Origin, Sender};
use crate::reply::Action;

/// Updates handled at once across chats; each holds a blocking thread while it runs (a model
/// call waits on one), so this bounds threads, not cores.
pub(super) const MAX_PARALLEL_UPDATES: usize = 32;
/// How long shutdown waits for updates being handled; what is left stays in the inbox.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// What every worker needs.
struct Context {
    bot: Bot,
    app: Arc<App>,
    engine: Arc<Engine>,
    wake: Arc<Notify>,
    permits: Semaphore,
    stop: CancellationToken,
}

/// The chats' workers: a queue per chat with a worker draining it.
pub(super) struct Workers {
    context: Arc<Context>,
    queues: Mutex<HashMap<i64, mpsc::UnboundedSender<(u64, Update)>>>,
    /// Updates queued or being handled here.
    in_flight: Mutex<std::collections::HashSet<u64>>,
    tracker: TaskTracker,
}

impl Workers {
    pub(super) fn start(
        bot: &Bot,
        app: &Arc<App>,
        engine: &Arc<Engine>,
        wake: &Arc<Notify>,
        shutdown: &CancellationToken,
    ) -> Arc<Workers> {
        Arc::new(Workers {
            context: Arc::new(Context {
                bot: bot.clone(),
                app: app.clone(),
                engine: engine.clone(),
                wake: wake.clone(),
                permits: Semaphore::new(MAX_PARALLEL_UPDATES),
                stop: shutdown.child_token(),
            }),
            queues: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(std::collections::HashSet::new()),
            tracker: TaskTracker::new(),
        })
    }

    /// Waits for the updates being handled (up to the grace period); what is left stays in the
    /// inbox.
    pub(super) async fn finish(&self) {
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tracker.wait()).await.is_err() {
            tracing::warn!("updates still being handled at shutdown stay in the inbox for the next start");
        }
    }

    /// Whether update `id` is queued or being handled here.
    pub(super) fn has(&self, id: u64) -> bool {
        self.in_flight.lock().unwrap_or_else(PoisonError::into_inner).contains(&id)
    }

    /// Queues `update` behind its chat's earlier ones, starting the chat's worker if none runs.
    pub(super) fn dispatch(self: &Arc<Self>, id: u64, update: Update) {
        if !self.in_flight.lock().unwrap_or_else(PoisonError::into_inner).insert(id) {
            return;
        }
        let chat = chat_of(&update);
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let queue = queues.entry(chat).or_insert_with(|| {
            let (queue, inbox) = mpsc::unbounded_channel();
            self.tracker.spawn(self.clone().work(chat, inbox));
            queue
        });
        // The worker removes its queue (under this lock) before it stops, so a queue in the map
        // always has a worker reading it.
        let _ = queue.send((id, update));
    }

    /// Drains the chat's queue and leaves as soon as it is empty: only chats with updates
    /// waiting hold a worker and a queue (a thousand employees asking once a minute kept a
    /// thousand idle queues alive when workers lingered).
    async fn work(self: Arc<Self>, chat: i64, mut queue: mpsc::UnboundedReceiver<(u64, Update)>) {
        loop {
            match queue.try_recv() {
                Ok((id, update)) if !self.context.stop.is_cancelled() => {
                    let Ok(_permit) = self.context.permits.acquire().await else { return };
                    handle(&self.context, id, update).await;
                    self.in_flight.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
                }
                _ => {
                    let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
                    if queue.is_empty() || self.context.stop.is_cancelled() {
                        queues.remove(&chat);
                        return;
                    }
                }
            }
        }
    }
}

/// Polls Telegram until `shutdown`, handling updates as they come; returns once the updates
/// being handled are done (or the grace period is over).
pub(crate) async fn run(
    poller: &Bot,
    bot: &Bot,
    app: &Arc<App>,
    engine: &Arc<Engine>,
    wake: &Arc<Notify>,
    poll_timeout: u32,
    shutdown: &CancellationToken,
) {
    let workers = Workers::start(bot, app, engine, wake, shutdown);
    poll(poller, app, &workers, poll_timeout, shutdown).await;
    workers.finish().await;
}

async fn poll(
    poller: &Bot,
    app: &Arc<App>,
    workers: &Arc<Workers>,
    poll_timeout: u32,
    shutdown: &CancellationToken,
) {
    // What was received before the last stop and not handled goes first.
    let pending = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || app.store().inbox()).await
    };
    match pending {
        Ok(Ok(pending)) => {
            for (id, bytes) in pending {
                match serde_json::from_slice::<Update>(&bytes) {
                    Ok(update) => workers.dispatch(id, update),
                    Err(e) => {
                        tracing::error!(error = %e, update = id, "an update in the inbox cannot be read; dropped");
                        let app = app.clone();
                        let _ =
                            tokio::task::spawn_blocking(move || app.store().commit_update::<Action>(id, &[]))
                                .await;
                    }
                }
            }
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot read the inbox");
            return;
        }
        Err(_) => return,
    }
    let mut backoff = Duration::from_millis(500);
    while !shutdown.is_cancelled() {
        let offset = {
            let app = app.clone();
            match tokio::task::spawn_blocking(move || app.store().telegram_offset()).await {
                Ok(Ok(offset)) => offset,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot read the update offset");
                    return;
                }
                Err(_) => return,
            }
        };
        let request = poller
            .get_updates()
            .offset(offset as i32)
            .timeout(poll_timeout)
            .allowed_updates(vec![AllowedUpdate::Message, AllowedUpdate::CallbackQuery]);
        let updates = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = request => result,
        };
        let updates = match updates {
            Ok(updates) => {
                backoff = Duration::from_millis(500);
                updates
            }
            Err(RequestError::RetryAfter(seconds)) => {
                tokio::time::sleep(seconds.duration()).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "polling Telegram failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        if updates.is_empty() {
            continue;
        }
        let batch: Vec<(u64, Vec<u8>)> = updates
            .iter()
            .map(|u| (u64::from(u.id.0), serde_json::to_vec(u).expect("updates serialise")))
            .collect();
        let received = {
            let app = app.clone();
            tokio::task::spawn_blocking(move || app.store().receive_updates(&batch)).await
        };
        let kept = match received {
            Ok(Ok(kept)) => kept,
            Ok(Err(e)) => {
                // Not kept, so not confirmed either: the same batch comes again.
                tracing::error!(error = %e, retry_in = ?backoff, "cannot keep received updates");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
            Err(_) => return,
        };
        for update in updates {
            let id = u64::from(update.id.0);
            if kept.contains(&id) {
                workers.dispatch(id, update);
            }
        }
    }
}

/// The chat an update belongs to (its worker's key); updates Sputnik ignores share key 0.
fn chat_of(update: &Update) -> i64 {
    match &update.kind {
        UpdateKind::Message(message) => message.chat.id.0,
        UpdateKind::CallbackQuery(query) => match &query.message {
            Some(MaybeInaccessibleMessage::Regular(m)) => m.chat.id.0,
            Some(MaybeInaccessibleMessage::Inaccessible(m)) => m.chat.id.0,
            None => query.from.id.0 as i64,
        },
        _ => 0,
    }
}

/// Handles one update: turns it into an event (downloading a document first), runs the engine
/// and commits the replies with the update's removal from the inbox.
async fn handle(context: &Context, id: u64, update: Update) {
    let Context { bot, app, engine, wake, .. } = context;
    // Another replica may have answered it while it waited here (it was taken over, or posted
    // twice): nothing to do.
    let handled = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || app.store().update_handled(id)).await
    };
    if matches!(handled, Ok(Ok(true))) {
        tracing::debug!(update = id, "handled already, by this replica or another");
        return;
    }
    let event = match document_of(&update) {
        Some((from, chat, document)) => receive_document(bot, engine, from, chat, document).await,
        None => to_event(&update).map(Ok),
    };
    let event = match event {
        Some(Ok(event)) => Some(event),
        // Refused before download: the replies go out like any others.
        Some(Err(refusal)) => {
            let app = app.clone();
            match tokio::task::spawn_blocking(move || app.store().commit_update(id, &refusal)).await {
                Ok(Ok(true)) => wake.notify_one(),
                Ok(Ok(false)) => tracing::debug!(update = id, "handled already, by this replica or another"),
                Ok(Err(e)) => tracing::error!(error = %e, update = id, "could not record a handled update"),
                Err(e) => tracing::error!(error = %e, update = id, "update handler failed"),
            }
            return;
        }
        None => None,
    };
    let typing_in = match &event {
        Some(Event::Text { chat, .. }) => Some(*chat),
        _ => None,
    };
    let (engine, app) = (engine.clone(), app.clone());
    let handling = tokio::task::spawn_blocking(move || {
        let actions: Vec<Action> = match &event {
            Some(event) => engine
                .handle_update(id, event)
                .into_iter()
                .filter(|a| !matches!(a, Action::Typing { .. }))
                .collect(),
            None => Vec::new(),
        };
        app.store().commit_update(id, &actions)
    });
    // "typing…" while the question is handled (a model may be rewriting it), renewed before
    // Telegram's five seconds run out. Best effort and not queued: it is only useful right now.
    let handled = match typing_in {
        Some(chat) => super::typing_while(bot, chat, handling).await,
        None => handling.await,
    };
    match handled {
        Ok(Ok(true)) => wake.notify_one(),
        Ok(Ok(false)) => tracing::debug!(update = id, "handled already, by this replica or another"),
        // Not committed: the update stays in the inbox and is handled again at the next start.
        Ok(Err(e)) => tracing::error!(error = %e, update = id, "could not record a handled update"),
        Err(e) => tracing::error!(error = %e, update = id, "update handler failed"),
    }
}

/// A document sent in a private chat, with its sender.
fn document_of(update: &Update) -> Option<(Sender, crate::store::ChatId, teloxide::types::Document)> {
    let UpdateKind::Message(message) = &update.kind else { return None };
    if !message.chat.is_private() {
        return None;
    }
    let document = message.document()?.clone();
    Some((sender_of(message.from.as_ref()?), crate::store::ChatId(message.chat.id.0), document))
}

/// Downloads a document the engine admits (admins only, within the size limit); refusals
/// come back as the actions to send instead.
async fn receive_document(
    bot: &Bot,
    engine: &Arc<Engine>,
    from: Sender,
    chat: crate::store::ChatId,
    document: teloxide::types::Document,
) -> Option<Result<Event, Vec<Action>>> {
    use teloxide::net::Download;
    let size = u64::from(document.file.size);
    let refusal = {
        let (engine, from) = (engine.clone(), from.clone());
        tokio::task::spawn_blocking(move || engine.admit_document(&from, chat, size)).await.ok()?
    };
    if !refusal.is_empty() {
        return Some(Err(refusal));
    }
    let failed = |from: &Sender| {
        let language = crate::i18n::from_telegram_code(from.language_code.as_deref());
        Some(Err(vec![Action::Send {
            chat,
            html: crate::i18n::message(language, "error", &[]),
            buttons: Vec::new(),
        }]))
    };
    let file = match bot.get_file(document.file.id.clone()).await {
        Ok(file) => file,
        Err(e) => {
            tracing::warn!(error = %e, "could not look up a sent document");
            return failed(&from);
        }
    };
    let mut content = Vec::with_capacity(size as usize);
    if let Err(e) = bot.download_file(&file.path, &mut content).await {
        tracing::warn!(error = %e, "could not download a sent document");
        return failed(&from);
    }
    let file_name = document.file_name.unwrap_or_else(|| "document.txt".into());
    Some(Ok(Event::Document { from, chat, file_name, content }))
}

/// Engine events from updates Sputnik handles: private text messages and button presses.
fn to_event(update: &Update) -> Option<Event> {
    match &update.kind {
        UpdateKind::Message(message) if message.chat.is_private() => {
            let user = message.from.as_ref()?;
            // Stickers, photos and the like carry no question: the engine asks for words.
            let text = message.text().or(message.caption()).unwrap_or_default().to_owned();
            Some(Event::Text { from: sender_of(user), chat: crate::store::ChatId(message.chat.id.0), text })
        }
        UpdateKind::CallbackQuery(query) => {
            let message = query.message.as_ref()?;
            let chat = crate::store::ChatId(match message {
                MaybeInaccessibleMessage::Regular(m) => m.chat.id.0,
                MaybeInaccessibleMessage::Inaccessible(m) => m.chat.id.0,
            });
            Some(Event::Button {
                from: sender_of(&query.from),
                chat,
                message_id: message.id().0,
                callback_id: query.id.0.clone(),
                data: query.data.clone().unwrap_or_default(),
            })
        }
        _ => None,
    }
}

fn sender_of(user: &teloxide::types::User) -> Sender {
    Sender {
        origin: Origin::Telegram { user_id: user.id.0 as i64 },
        first_name: user.first_name.clone(),
        language_code: user.language_code.clone(),
    }
}
