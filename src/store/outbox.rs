//! Exactly-once hand-over between the Telegram poller and the sender.
//!
//! Handling an update ends with one transaction that records the update as handled (the next
//! offset to poll) and appends the actions it produced to the outbox. The sender delivers the
//! outbox in order and deletes each item once Telegram accepted it. After a crash or restart an
//! update is never handled twice (its offset is stored) and a reply is never lost (it waits in
//! the outbox); the only window for a duplicate is a message Telegram accepted in the instant
//! before its deletion was committed.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::people::EmployeeId;

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
    pub chat: i64,
}

use super::schema::{BROADCASTS, DELIVERIES, META, META_TEXT, OUTBOX, UPDATE_QUESTIONS, meta_keys};
use super::{Store, StoreResult, decode, encode};

impl Store {
    /// The next update id to poll for.
    pub fn telegram_offset(&self) -> StoreResult<u64> {
        self.meta(meta_keys::TELEGRAM_OFFSET)
    }

    /// Records `update_id` as handled and queues its actions, in one transaction.
    pub fn commit_update<T: Serialize>(&self, update_id: u64, actions: &[T]) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let offset = meta.get(meta_keys::TELEGRAM_OFFSET)?.map(|v| v.value()).unwrap_or(0);
            meta.insert(meta_keys::TELEGRAM_OFFSET, offset.max(update_id + 1))?;
            txn.open_table(UPDATE_QUESTIONS)?.remove(update_id)?;
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
    pub fn outbox_delivered(&self, id: u64, delivery: Option<(u64, i64, bool)>) -> StoreResult<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(OUTBOX)?.remove(id)?;
        if let Some((broadcast, chat, delivered)) = delivery {
            txn.open_table(DELIVERIES)?.insert((broadcast, chat), u8::from(delivered))?;
        }
        self.commit(txn)
    }

    /// Records a broadcast and queues its messages (built by `message` for each recipient's
    /// chat), in one transaction. Returns the broadcast's id.
    pub fn create_broadcast<T: Serialize>(
        &self,
        mut broadcast: Broadcast,
        message: impl Fn(u64, i64) -> T,
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
    pub fn deliveries(&self, id: u64) -> StoreResult<std::collections::HashMap<i64, bool>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DELIVERIES)?;
        let mut out = std::collections::HashMap::new();
        for row in table.range((id, i64::MIN)..=(id, i64::MAX))? {
            let (key, value) = row?;
            out.insert(key.value().1, value.value() == 1);
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
}
