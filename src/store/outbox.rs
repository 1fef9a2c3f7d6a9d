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

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
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

use super::schema::{BROADCASTS, DELIVERIES, INBOX, META, META_TEXT, OUTBOX, UPDATE_QUESTIONS, meta_keys};
use super::{Store, StoreResult, decode, encode};

impl Store {
    /// The next update id to poll for.
    pub fn telegram_offset(&self) -> StoreResult<u64> {
        self.meta(meta_keys::TELEGRAM_OFFSET)
    }

    /// Keeps received updates (id, the update as JSON) until they are handled, and moves the
    /// offset to poll past them, in one transaction. Updates below the stored offset were
    /// received before and are left alone. Returns the ones newly kept.
    pub fn receive_updates(&self, updates: &[(u64, Vec<u8>)]) -> StoreResult<Vec<u64>> {
        let txn = self.db.begin_write()?;
        let mut kept = Vec::new();
        {
            let mut meta = txn.open_table(META)?;
            let offset = meta.get(meta_keys::TELEGRAM_OFFSET)?.map(|v| v.value()).unwrap_or(0);
            let mut inbox = txn.open_table(INBOX)?;
            let mut next = offset;
            for (id, update) in updates.iter().filter(|(id, _)| *id >= offset) {
                inbox.insert(*id, update.as_slice())?;
                kept.push(*id);
                next = next.max(id + 1);
            }
            meta.insert(meta_keys::TELEGRAM_OFFSET, next)?;
        }
        self.commit(txn)?;
        Ok(kept)
    }

    /// Updates received and not yet handled, oldest first.
    pub fn inbox(&self) -> StoreResult<Vec<(u64, Vec<u8>)>> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(INBOX) {
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            table => table?,
        };
        let mut out = Vec::new();
        for row in table.iter()? {
            let (id, bytes) = row?;
            out.push((id.value(), bytes.value().to_vec()));
        }
        Ok(out)
    }

    /// Records `update_id` as handled — out of the inbox, past the offset — and queues its
    /// actions, in one transaction.
    pub fn commit_update<T: Serialize>(&self, update_id: u64, actions: &[T]) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let offset = meta.get(meta_keys::TELEGRAM_OFFSET)?.map(|v| v.value()).unwrap_or(0);
            meta.insert(meta_keys::TELEGRAM_OFFSET, offset.max(update_id + 1))?;
            txn.open_table(UPDATE_QUESTIONS)?.remove(update_id)?;
            txn.open_table(INBOX)?.remove(update_id)?;
        }
        append(&txn, actions)?;
        self.commit(txn)
    }

    /// Queues actions that do not answer an update (broadcasts, reminders).
    pub fn enqueue<T: Serialize>(&self, actions: &[T]) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        append(&txn, actions)?;
        self.commit(txn)
    }

    /// Up to `limit` undelivered actions, oldest first.
    pub fn outbox<T: DeserializeOwned>(&self, limit: usize) -> StoreResult<Vec<(u64, T)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OUTBOX)?;
        let mut out = Vec::new();
        for row in table.iter()?.take(limit) {
            let (id, bytes) = row?;
            out.push((id.value(), decode(bytes.value(), || format!("outbox item {}", id.value()))?));
        }
        Ok(out)
    }

    pub fn outbox_len(&self) -> StoreResult<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(OUTBOX)?.len()?)
    }

    /// Removes a delivered (or undeliverable) action.
    pub fn outbox_done(&self, id: u64) -> StoreResult<()> {
        self.outbox_delivered(id, None)
    }

    /// Removes a delivered (or undeliverable) action and, for a broadcast message, records its
    /// fate — `(broadcast, chat, delivered)` — in the same transaction.
    pub fn outbox_delivered(&self, id: u64, delivery: Option<(u64, ChatId, bool)>) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(OUTBOX)?.remove(id)?;
        if let Some((broadcast, chat, delivered)) = delivery {
            txn.open_table(DELIVERIES)?.insert((broadcast, chat.0), u8::from(delivered))?;
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
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            broadcast.id = meta.get(meta_keys::NEXT_BROADCAST_ID)?.map(|v| v.value()).unwrap_or(1);
            meta.insert(meta_keys::NEXT_BROADCAST_ID, broadcast.id + 1)?;
        }
        txn.open_table(BROADCASTS)?.insert(broadcast.id, encode(&broadcast).as_slice())?;
        let actions: Vec<T> = broadcast.recipients.iter().map(|r| message(broadcast.id, r.chat)).collect();
        append(&txn, &actions)?;
        self.commit(txn)?;
        Ok(broadcast)
    }

    pub fn broadcast(&self, id: u64) -> StoreResult<Option<Broadcast>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(BROADCASTS)?;
        table.get(id)?.map(|v| decode(v.value(), || format!("broadcast {id}"))).transpose()
    }

    /// Per recipient chat of broadcast `id`: `Some(true)` delivered, `Some(false)` refused,
    /// `None` still queued.
    pub fn deliveries(&self, id: u64) -> StoreResult<std::collections::HashMap<ChatId, bool>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DELIVERIES)?;
        let mut out = std::collections::HashMap::new();
        for row in table.range((id, i64::MIN)..=(id, i64::MAX))? {
            let (key, value) = row?;
            out.insert(ChatId(key.value().1), value.value() == 1);
        }
        Ok(out)
    }

    pub fn bot_username(&self) -> StoreResult<Option<String>> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(META_TEXT)?.get(meta_keys::BOT_USERNAME)?.map(|v| v.value().to_owned()))
    }

    pub fn set_bot_username(&self, username: &str) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(META_TEXT)?.insert(meta_keys::BOT_USERNAME, username)?;
        self.commit(txn)
    }
}

/// Appends actions to the outbox inside `txn`, numbering them in order.
pub(super) fn append<T: Serialize>(txn: &redb::WriteTransaction, actions: &[T]) -> StoreResult<()> {
    let mut meta = txn.open_table(META)?;
    let mut next = meta.get(meta_keys::NEXT_OUTBOX_ID)?.map(|v| v.value()).unwrap_or(1);
    let mut outbox = txn.open_table(OUTBOX)?;
    for action in actions {
        outbox.insert(next, encode(action).as_slice())?;
        next += 1;
    }
    meta.insert(meta_keys::NEXT_OUTBOX_ID, next)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_and_its_replies_commit_together_and_drain_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
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
    }

    #[test]
    fn received_updates_wait_in_the_inbox_until_handled_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = Store::open(&path).unwrap();
        assert!(store.inbox().unwrap().is_empty());
        let batch =
            |ids: &[u64]| ids.iter().map(|&id| (id, format!("update {id}").into_bytes())).collect::<Vec<_>>();
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
        let store = Store::open(&path).unwrap();
        assert_eq!(store.inbox().unwrap().iter().map(|(id, _)| *id).collect::<Vec<_>>(), [11]);
        store.commit_update(11, &["reply to 11"]).unwrap();
        assert!(store.inbox().unwrap().is_empty());
        assert_eq!(store.outbox::<String>(10).unwrap().len(), 3);
        assert_eq!(store.telegram_offset().unwrap(), 13);
    }
}
