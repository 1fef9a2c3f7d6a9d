//! Exactly-once hand-over between Telegram, the handlers and the sender.
//!
//! Updates are received into the *inbox* together with the next offset to poll, in one
//! transaction, before the poll that confirms them to Telegram; so the poller can fetch more
//! while earlier updates are still being handled (chats in parallel). Handling an update ends
//! with one transaction that removes it from the inbox and appends the actions it produced to
//! the *outbox*. The sender delivers the outbox in order and deletes each item once Telegram
//! accepted it. After a crash or restart an update is never handled twice (it left the inbox
//! with its replies) and never lost (it waits in the inbox, and is handled again from there), and
//! a reply is never lost (it waits in the outbox); the only window for a duplicate is a message
//! Telegram accepted in the instant before its deletion was committed.

use std::ops::ControlFlow;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::people::{ChatId, EmployeeId};

/// A message sent to many employees at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Broadcast {
    pub id: u64,
    pub text: String,
    pub created_at: i64,
    /// Who it was queued for.
    pub recipients: Vec<Recipient>,
    /// Employees it matched who have not joined Telegram, so it could not be queued for them.
    pub unreachable: Vec<EmployeeId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub employee: EmployeeId,
    pub chat: ChatId,
}

use super::kv::{Reader, Span, Write};
use super::schema::{
    BROADCASTS, DELIVERIES, HANDLED, HANDLED_KEPT, INBOX, META_TEXT, OUTBOX, UPDATE_QUESTIONS, meta,
    meta_keys, meta_text, set_meta, take_id,
};
use super::{Store, StoreError, StoreResult, decode, encode};

impl Store {
    /// The next update id to poll for.
    pub fn telegram_offset(&self) -> StoreResult<u64> {
        self.meta(meta_keys::TELEGRAM_OFFSET)
    }

    /// Keeps received updates (id, the update as JSON) until they are handled, and moves the
    /// offset to poll past them, in one transaction. Updates below the stored offset were
    /// received before and are left alone. Returns the ones newly kept.
    pub fn receive_updates(&self, updates: &[(u64, Vec<u8>)]) -> StoreResult<Vec<u64>> {
        let txn = self.write()?;
        let offset = meta(&txn, meta_keys::TELEGRAM_OFFSET)?;
        let fresh: Vec<&(u64, Vec<u8>)> = updates.iter().filter(|(id, _)| *id >= offset).collect();
        txn.insert_all(&INBOX, fresh.iter().map(|(id, update)| (*id, update)))?;
        let next = fresh.iter().map(|(id, _)| id + 1).fold(offset, u64::max);
        set_meta(&txn, meta_keys::TELEGRAM_OFFSET, next)?;
        self.commit(txn)?;
        Ok(fresh.iter().map(|(id, _)| *id).collect())
    }

    /// Updates received and not yet handled, oldest first.
    pub fn inbox(&self) -> StoreResult<Vec<(u64, Vec<u8>)>> {
        self.read()?.rows(&INBOX, Span::all())
    }

    /// Keeps one update that came by webhook until it is handled; `false` when it was received
    /// or handled before (Telegram posting it again, or to a second replica), so it is handled
    /// once across every replica. In the same transaction as the check.
    pub fn accept_update(&self, id: u64, update: &[u8]) -> StoreResult<bool> {
        let txn = self.write()?;
        if txn.get(&HANDLED, &id)?.is_some() || txn.get(&INBOX, &id)?.is_some() {
            txn.abort()?;
            return Ok(false);
        }
        txn.insert(&INBOX, &id, &update.to_vec())?;
        self.commit(txn)?;
        Ok(true)
    }

    /// Whether `update_id` was handled (its replies queued), here or by another replica.
    pub fn update_handled(&self, update_id: u64) -> StoreResult<bool> {
        Ok(self.read()?.get(&HANDLED, &update_id)?.is_some())
    }

    /// Records `update_id` as handled — out of the inbox, past the offset, in the ledger of
    /// handled updates — and queues its actions, in one transaction. `false`, queueing nothing,
    /// when it was handled before: two replicas that both handled it (one took over an update
    /// the other seemed to have dropped) answer once.
    pub fn commit_update<T: Serialize>(&self, update_id: u64, actions: &[T]) -> StoreResult<bool> {
        let txn = self.write()?;
        if txn.get(&HANDLED, &update_id)?.is_some() {
            txn.abort()?;
            return Ok(false);
        }
        let offset = meta(&txn, meta_keys::TELEGRAM_OFFSET)?;
        set_meta(&txn, meta_keys::TELEGRAM_OFFSET, offset.max(update_id + 1))?;
        txn.remove(&INBOX, &update_id)?;
        txn.insert(&HANDLED, &update_id, &1)?;
        // The question an update logged stays beside it in the ledger: a replica still handling
        // the update (it took it over) finds the question logged, and does not log it again.
        if update_id >= HANDLED_KEPT {
            txn.remove_span(&HANDLED, Span::from_until(0, update_id - HANDLED_KEPT))?;
            txn.remove_span(&UPDATE_QUESTIONS, Span::from_until(0, update_id - HANDLED_KEPT))?;
        }
        append(&txn, actions)?;
        self.commit(txn)?;
        Ok(true)
    }

    /// Queues actions that do not answer an update (broadcasts, reminders).
    pub fn enqueue<T: Serialize>(&self, actions: &[T]) -> StoreResult<()> {
        let txn = self.write()?;
        append(&txn, actions)?;
        self.commit(txn)
    }

    /// Wakes `wake` whenever any process on this store queues actions or logs a change
    /// ([`Notice`]), so a replica that sends or follows need not poll for them. Nothing on redb,
    /// where this process is the only one.
    pub fn wake_on(&self, notice: Notice, wake: std::sync::Arc<tokio::sync::Notify>) -> StoreResult<()> {
        match &self.backend {
            super::Backend::Redb(_) => Ok(()),
            super::Backend::Postgres(pool) => pool.wake_on(notice.channel(), wake),
        }
    }

    /// Reopens the connection that listens for notices if it was lost (a network cut, a server
    /// restart); called now and then by whoever waits on them.
    pub fn keep_listening(&self) -> StoreResult<()> {
        match &self.backend {
            super::Backend::Redb(_) => Ok(()),
            super::Backend::Postgres(pool) => pool.listen(),
        }
    }

    /// Up to `limit` undelivered actions, oldest first.
    pub fn outbox<T: DeserializeOwned>(&self, limit: usize) -> StoreResult<Vec<(u64, T)>> {
        let txn = self.read()?;
        let mut out = Vec::new();
        txn.scan(&OUTBOX, Span::all(), |id, bytes| {
            if out.len() == limit {
                return Ok(ControlFlow::Break(()));
            }
            out.push((id, decode(&bytes, || format!("outbox item {id}"))?));
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    pub fn outbox_len(&self) -> StoreResult<u64> {
        self.read()?.len(&OUTBOX)
    }

    /// Removes a delivered (or undeliverable) action.
    pub fn outbox_done(&self, id: u64) -> StoreResult<()> {
        self.outbox_delivered(id, None)
    }

    /// Removes a delivered (or undeliverable) action and, for a broadcast message, records its
    /// fate — `(broadcast, chat, delivered)` — in the same transaction.
    pub fn outbox_delivered(&self, id: u64, delivery: Option<(u64, ChatId, bool)>) -> StoreResult<()> {
        let txn = self.write()?;
        txn.remove(&OUTBOX, &id)?;
        if let Some((broadcast, chat, delivered)) = delivery {
            txn.insert(&DELIVERIES, &(broadcast, chat.0), &u8::from(delivered))?;
        }
        self.commit(txn)
    }

    /// Records a broadcast and queues its messages (built by `message` for each recipient's
    /// chat), in one transaction. Returns the broadcast's id.
    pub fn create_broadcast<T: Serialize>(
        &self,
        mut broadcast: Broadcast,
        message: impl Fn(u64, ChatId) -> T,
    ) -> StoreResult<Broadcast> {
        let txn = self.write()?;
        broadcast.id = take_id(&txn, meta_keys::NEXT_BROADCAST_ID)?;
        txn.insert(&BROADCASTS, &broadcast.id, &encode(&broadcast))?;
        let actions: Vec<T> = broadcast.recipients.iter().map(|r| message(broadcast.id, r.chat)).collect();
        append(&txn, &actions)?;
        self.commit(txn)?;
        Ok(broadcast)
    }

    pub fn broadcast(&self, id: u64) -> StoreResult<Option<Broadcast>> {
        let bytes = self.read()?.get(&BROADCASTS, &id)?;
        bytes.map(|v| decode(&v, || format!("broadcast {id}"))).transpose()
    }

    /// Per recipient chat of broadcast `id`: `Some(true)` delivered, `Some(false)` refused,
    /// `None` still queued.
    pub fn deliveries(&self, id: u64) -> StoreResult<std::collections::HashMap<ChatId, bool>> {
        let rows = self.read()?.rows(&DELIVERIES, Span::between((id, i64::MIN), (id, i64::MAX)))?;
        Ok(rows.into_iter().map(|((_, chat), delivered)| (ChatId(chat), delivered == 1)).collect())
    }

    pub fn bot_username(&self) -> StoreResult<Option<String>> {
        meta_text(&self.read()?, meta_keys::BOT_USERNAME)
    }

    pub fn set_bot_username(&self, username: &str) -> StoreResult<()> {
        let txn = self.write()?;
        txn.insert(&META_TEXT, &meta_keys::BOT_USERNAME.to_owned(), &username.to_owned())?;
        self.commit(txn)
    }
}

/// What other processes on a PostgreSQL store can be told about as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Actions were queued for the sender.
    Outbox,
    /// The change log grew: documents or vectors changed.
    Changes,
}

impl Notice {
    pub(super) fn channel(self) -> &'static str {
        match self {
            Notice::Outbox => "sputnik_outbox",
            Notice::Changes => "sputnik_changes",
        }
    }
}

/// Appends actions to the outbox inside `txn`, numbering them in order.
pub(super) fn append<T: Serialize>(txn: &Write, actions: &[T]) -> StoreResult<()> {
    if actions.is_empty() {
        return Ok(());
    }
    txn.notify(Notice::Outbox.channel())?;
    let first = meta(txn, meta_keys::NEXT_OUTBOX_ID)?.max(1);
    let encoded: Vec<Vec<u8>> = actions.iter().map(encode).collect();
    txn.insert_all(&OUTBOX, encoded.iter().enumerate().map(|(i, bytes)| (first + i as u64, bytes)))?;
    set_meta(txn, meta_keys::NEXT_OUTBOX_ID, first + actions.len() as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_update_and_its_replies_commit_together_and_drain_in_order() {
        crate::store::testing::each_backend(|backend| {
            let store = backend.open();
            assert_eq!(store.telegram_offset().unwrap(), 0);
            store.commit_update(41, &["a", "b"]).unwrap();
            store.commit_update(42, &["c"]).unwrap();
            assert_eq!(store.telegram_offset().unwrap(), 43);
            let items: Vec<(u64, String)> = store.outbox(10).unwrap();
            assert_eq!(items.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
            store.outbox_done(items[0].0).unwrap();
            assert_eq!(store.outbox_len().unwrap(), 2);
            // A late duplicate of an old update never moves the offset back.
            store.commit_update(5, &Vec::<String>::new()).unwrap();
            assert_eq!(store.telegram_offset().unwrap(), 43);
        });
    }

    /// On PostgreSQL a process that waits for replies or changes is woken when another
    /// process's transaction commits them, and not by one that rolls back.
    #[test]
    fn other_processes_queueing_replies_or_changes_wake_a_listener() {
        use super::{Notice, Store};
        use std::sync::Arc;
        use std::time::Duration;
        let url = crate::store::testing::fresh_database();
        let (sender, other) = (Store::connect(&url).unwrap(), Store::connect(&url).unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let woken_within = |wake: &Arc<tokio::sync::Notify>, wait: Duration| {
            runtime.block_on(async { tokio::time::timeout(wait, wake.notified()).await.is_ok() })
        };
        let woken = |wake: &Arc<tokio::sync::Notify>| woken_within(wake, Duration::from_secs(10));
        let (replies, changes) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
        sender.wake_on(Notice::Outbox, replies.clone()).unwrap();
        sender.wake_on(Notice::Changes, changes.clone()).unwrap();
        let txn = other.write().unwrap();
        super::append(&txn, &["never sent"]).unwrap();
        txn.abort().unwrap();
        other.enqueue(&["a reply"]).unwrap();
        assert!(woken(&replies), "a committed reply wakes the sender");
        // Exactly one wake-up: the rolled-back reply sent none.
        assert!(!woken_within(&replies, Duration::from_millis(300)));
        assert_eq!(sender.outbox::<String>(10).unwrap().len(), 1);
        let doc = crate::store::NewDocument {
            root: "/kb".into(),
            source: "a.md".into(),
            title: "A".into(),
            language: crate::store::Language::En,
            groups: vec![],
            content_hash: "h".into(),
            pipeline: "p".into(),
            format: crate::store::Format::Markdown,
            size: 1,
            updated_at: 0,
            chunks: vec![],
        };
        other.put_document(doc, None).unwrap();
        assert!(woken(&changes), "a change to the documents wakes the follower");
        // The store on redb has no other process to hear from: nothing to listen to.
        let dir = tempfile::tempdir().unwrap();
        Store::open(&dir.path().join("store.redb")).unwrap().wake_on(Notice::Outbox, replies).unwrap();
    }

    #[test]
    fn received_updates_wait_in_the_inbox_until_handled_in_any_order() {
        crate::store::testing::each_backend(|backend| {
            let store = backend.open();
            assert!(store.inbox().unwrap().is_empty());
            let batch = |ids: &[u64]| {
                ids.iter().map(|&id| (id, format!("update {id}").into_bytes())).collect::<Vec<_>>()
            };
            assert_eq!(store.receive_updates(&batch(&[10, 11, 12])).unwrap(), [10, 11, 12]);
            assert_eq!(store.telegram_offset().unwrap(), 13, "the next poll confirms them to Telegram");
            // Handled out of order (another chat's update first): the earlier one stays.
            store.commit_update(12, &["reply to 12"]).unwrap();
            store.commit_update(10, &["reply to 10"]).unwrap();
            assert_eq!(store.inbox().unwrap(), vec![(11, b"update 11".to_vec())]);
            // The same batch again (the confirming poll never happened) keeps nothing twice.
            assert!(store.receive_updates(&batch(&[10, 11, 12])).unwrap().is_empty());
            drop(store);
            // After a restart what was not handled is still there, and only that.
            let store = backend.open();
            assert_eq!(store.inbox().unwrap().iter().map(|(id, _)| *id).collect::<Vec<_>>(), [11]);
            store.commit_update(11, &["reply to 11"]).unwrap();
            assert!(store.inbox().unwrap().is_empty());
            assert_eq!(store.outbox::<String>(10).unwrap().len(), 3);
            assert_eq!(store.telegram_offset().unwrap(), 13);
        });
    }
}
