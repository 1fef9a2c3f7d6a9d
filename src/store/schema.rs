//! Table definitions, in one place, and the numbered migrations that create and upgrade them.
//! Each migration runs inside the same write transaction that records its version, so a crash
//! mid-migration leaves the file at the previous version.

use std::path::Path;

use redb::{ReadableDatabase, TableHandle};

use super::kv::{AnyTable, Reader, Table, Write};
use super::{Store, StoreError, StoreResult};

/// Small counters and identities, keyed by name (see [`meta_keys`]).
pub(super) const META: Table<String, u64> = Table::new("meta");
/// Document id → JSON `DocumentRecord`.
pub(super) const DOCUMENTS: Table<u64, Vec<u8>> = Table::new("documents");
/// Encoded `SourceKey` (import root + relative path) → document id.
pub(super) const SOURCES: Table<String, u64> = Table::new("sources");
/// (document id, ordinal) → JSON `ChunkRecord`.
pub(super) const CHUNKS: Table<(u64, u32), Vec<u8>> = Table::new("chunks");
/// Employee id → JSON `Employee`.
pub(super) const EMPLOYEES: Table<u64, Vec<u8>> = Table::new("employees");
/// Telegram user id → employee id, for joined employees.
pub(super) const TELEGRAM_USERS: Table<i64, u64> = Table::new("telegram_users");
/// blake3 hash (hex) of an invite code → JSON `Invite`. Codes themselves are never stored.
pub(super) const INVITES: Table<String, Vec<u8>> = Table::new("invites");
/// Question id → JSON `QuestionRecord`: the conversation log.
pub(super) const QUESTIONS: Table<u64, Vec<u8>> = Table::new("questions");
/// Employee id → JSON `Session`: dialogue state that must survive restarts.
pub(super) const SESSIONS: Table<u64, Vec<u8>> = Table::new("sessions");
/// Outgoing messenger actions not yet delivered, in order: sequence → JSON action.
pub(super) const OUTBOX: Table<u64, Vec<u8>> = Table::new("outbox");
/// Onboarding plan id → JSON plan.
pub(super) const PLANS: Table<String, Vec<u8>> = Table::new("plans");
/// Employee id → JSON `Assignment`.
pub(super) const ASSIGNMENTS: Table<u64, Vec<u8>> = Table::new("assignments");
/// (employee id, task id) → JSON `TaskState`.
pub(super) const TASK_STATES: Table<(u64, String), Vec<u8>> = Table::new("task_states");
/// (employee id, scheduled message key) → unix seconds it was queued: the once-only ledger.
pub(super) const NOTIFICATIONS: Table<(u64, String), i64> = Table::new("notifications");
/// Broadcast id → JSON `Broadcast` (text, recipients).
pub(super) const BROADCASTS: Table<u64, Vec<u8>> = Table::new("broadcasts");
/// (broadcast id, chat) → 1 delivered, 0 refused by Telegram; absent: still queued.
pub(super) const DELIVERIES: Table<(u64, i64), u8> = Table::new("deliveries");
/// Text-valued settings of the store itself (see [`meta_keys`]).
pub(super) const META_TEXT: Table<String, String> = Table::new("meta_text");
/// Telegram update id → the question it logged, kept as long as the update's entry in
/// [`HANDLED`]: an update handled again (after a crash before its commit, or by a replica that
/// took it over while another answered it) does not log its question twice. Opened only in
/// write transactions, so it needs no migration.
pub(super) const UPDATE_QUESTIONS: Table<u64, u64> = Table::new("update_questions");
/// Telegram updates received and not yet handled: update id → the update as Telegram sent it
/// (JSON). Written before the poll that confirms them to Telegram, removed by the transaction
/// that commits their handling; created by its first write (a reader treats it as empty).
pub(super) const INBOX: Table<u64, Vec<u8>> = Table::new("inbox");

/// Telegram updates already handled (update id → 1), the last [`HANDLED_KEPT`] of them: a
/// webhook post that comes again (Telegram did not hear the first answer) or reaches a second
/// replica is recognised and dropped. Created by its first write.
pub(super) const HANDLED: Table<u64, u8> = Table::new("handled_updates");

/// Handled update ids remembered. Telegram numbers updates one by one, so this is the last
/// hundred thousand updates — days of traffic, longer than Telegram retries a post.
pub(super) const HANDLED_KEPT: u64 = 100_000;

/// The change log of searchable content: revision → JSON [`super::Change`], written by the
/// transaction that made the revision, so a replica's indexes can follow what others changed.
/// The last [`super::CHANGES_KEPT`] revisions are kept.
pub(super) const CHANGES: Table<u64, Vec<u8>> = Table::new("changes");

/// Every table but the per-model embeddings, in an order where nothing refers forward: what
/// `verify` reads through and a copy carries. A new table goes here too.
pub(super) static TABLES: [&dyn AnyTable; 21] = [
    &META,
    &META_TEXT,
    &DOCUMENTS,
    &SOURCES,
    &CHUNKS,
    &EMPLOYEES,
    &TELEGRAM_USERS,
    &INVITES,
    &QUESTIONS,
    &SESSIONS,
    &UPDATE_QUESTIONS,
    &INBOX,
    &OUTBOX,
    &PLANS,
    &ASSIGNMENTS,
    &TASK_STATES,
    &NOTIFICATIONS,
    &BROADCASTS,
    &DELIVERIES,
    &CHANGES,
    &HANDLED,
];

/// Chunk embeddings of one model: (document id, ordinal) → little-endian f32 vector. One table
/// per model, so re-embedding with another model never mixes vectors of two models.
pub(super) fn embeddings(model: &str) -> Table<(u64, u32), Vec<u8>> {
    Table::named(format!("embeddings/{model}"))
}

pub(super) mod meta_keys {
    pub const SCHEMA_VERSION: &str = "schema_version";
    pub const REVISION: &str = "revision";
    pub const NEXT_DOCUMENT_ID: &str = "next_document_id";
    pub const INSTANCE_ID: &str = "instance_id";
    /// (text) Name of the model whose embeddings every chunk has; absent: no embeddings.
    pub const EMBEDDING_MODEL: &str = "embedding_model";
    pub const NEXT_EMPLOYEE_ID: &str = "next_employee_id";
    pub const NEXT_QUESTION_ID: &str = "next_question_id";
    /// The next Telegram update id to ask for: every update below it has been handled.
    pub const TELEGRAM_OFFSET: &str = "telegram_offset";
    pub const NEXT_OUTBOX_ID: &str = "next_outbox_id";
    pub const NEXT_BROADCAST_ID: &str = "next_broadcast_id";
    /// (text) The bot's username as Telegram reported it, for invite links.
    pub const BOT_USERNAME: &str = "bot_username";
}

/// The schema this binary writes. Bump it together with a new entry in [`MIGRATIONS`].
pub const SCHEMA_VERSION: u64 = 6;

type Migration = fn(&Write) -> StoreResult<()>;

/// `MIGRATIONS[i]` upgrades a store from version `i` to `i + 1`. They run on both backends.
const MIGRATIONS: [Migration; SCHEMA_VERSION as usize] =
    [create_v1, add_embeddings_v2, add_people_v3, add_outbox_v4, add_onboarding_v5, add_changes_v6];

fn create_v1(txn: &Write) -> StoreResult<()> {
    txn.create(&DOCUMENTS)?;
    txn.create(&SOURCES)?;
    txn.create(&CHUNKS)?;
    set_meta(txn, meta_keys::REVISION, 0)?;
    set_meta(txn, meta_keys::NEXT_DOCUMENT_ID, 1)?;
    set_meta(txn, meta_keys::INSTANCE_ID, random_instance_id())
}

/// Version 2: chunk embeddings (per-model tables, created on first use) and text metadata.
fn add_embeddings_v2(txn: &Write) -> StoreResult<()> {
    txn.create(&META_TEXT)
}

/// Version 3: employees, invites, the conversation log and dialogue sessions.
fn add_people_v3(txn: &Write) -> StoreResult<()> {
    txn.create(&EMPLOYEES)?;
    txn.create(&TELEGRAM_USERS)?;
    txn.create(&INVITES)?;
    txn.create(&QUESTIONS)?;
    txn.create(&SESSIONS)?;
    set_meta(txn, meta_keys::NEXT_EMPLOYEE_ID, 1)?;
    set_meta(txn, meta_keys::NEXT_QUESTION_ID, 1)
}

/// Version 4: the Telegram update offset and the outbox of undelivered actions.
fn add_outbox_v4(txn: &Write) -> StoreResult<()> {
    txn.create(&OUTBOX)?;
    set_meta(txn, meta_keys::TELEGRAM_OFFSET, 0)?;
    set_meta(txn, meta_keys::NEXT_OUTBOX_ID, 1)
}

/// Version 5: onboarding plans, assignments, task progress, the scheduled-message ledger, and
/// broadcasts with their delivery records.
fn add_onboarding_v5(txn: &Write) -> StoreResult<()> {
    txn.create(&PLANS)?;
    txn.create(&ASSIGNMENTS)?;
    txn.create(&TASK_STATES)?;
    txn.create(&NOTIFICATIONS)?;
    txn.create(&BROADCASTS)?;
    txn.create(&DELIVERIES)?;
    set_meta(txn, meta_keys::NEXT_BROADCAST_ID, 1)
}

/// Version 6: the change log. Revisions before it have no entries; a replica whose index is
/// older than the log's first entry rebuilds instead of following.
fn add_changes_v6(txn: &Write) -> StoreResult<()> {
    txn.create(&CHANGES)
}

/// A counter of [`META`]; 0 when it was never set.
pub(super) fn meta(txn: &impl Reader, key: &str) -> StoreResult<u64> {
    Ok(txn.get(&META, &key.to_owned())?.unwrap_or(0))
}

pub(super) fn set_meta(txn: &Write, key: &str, value: u64) -> StoreResult<()> {
    txn.insert(&META, &key.to_owned(), &value)
}

/// Takes the next id from a counter of [`META`] (ids start at 1).
pub(super) fn take_id(txn: &Write, key: &str) -> StoreResult<u64> {
    let id = txn.get(&META, &key.to_owned())?.unwrap_or(1);
    set_meta(txn, key, id + 1)?;
    Ok(id)
}

/// A text setting of [`META_TEXT`].
pub(super) fn meta_text(txn: &impl Reader, key: &str) -> StoreResult<Option<String>> {
    txn.get(&META_TEXT, &key.to_owned())
}

/// Refuses a redb file that holds tables but not Sputnik's: another program's database. A file
/// with no tables at all is one whose creation was interrupted, and is set up as new.
pub(super) fn check_is_sputnik(db: &redb::Database, path: &Path) -> StoreResult<()> {
    let txn = db.begin_read()?;
    let tables: Vec<String> = txn.list_tables()?.map(|t| t.name().to_owned()).collect();
    if tables.is_empty() || tables.iter().any(|t| t == META.name()) {
        return Ok(());
    }
    Err(StoreError::Foreign {
        path: path.to_owned(),
        reason: format!("a redb database with other tables: {}", tables.join(", ")),
    })
}

/// Brings the store up to [`SCHEMA_VERSION`], refusing one written by a newer binary. Each
/// migration runs inside the write transaction that records its version.
pub(super) fn migrate(store: &Store) -> StoreResult<()> {
    // The common case, a current store, needs no write transaction at all.
    if meta(&store.read()?, meta_keys::SCHEMA_VERSION)? == SCHEMA_VERSION {
        return Ok(());
    }
    loop {
        let txn = store.write()?;
        let found = meta(&txn, meta_keys::SCHEMA_VERSION)?;
        if found == SCHEMA_VERSION {
            txn.abort()?;
            return Ok(());
        }
        if found > SCHEMA_VERSION {
            txn.abort()?;
            return Err(StoreError::TooNew { path: store.path.clone(), found, known: SCHEMA_VERSION });
        }
        MIGRATIONS[found as usize](&txn)?;
        set_meta(&txn, meta_keys::SCHEMA_VERSION, found + 1)?;
        txn.commit()?;
        tracing::debug!(from = found, to = found + 1, "migrated store schema");
    }
}

/// Not security-sensitive: it only has to differ between two stores.
fn random_instance_id() -> u64 {
    let mut hasher = blake3::Hasher::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    hasher.update(&now.as_nanos().to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    let digest = hasher.finalize();
    u64::from_le_bytes(digest.as_bytes()[..8].try_into().expect("8 bytes"))
}
