//! Table definitions, in one place, and the numbered migrations that create and upgrade them.
//! Each migration runs inside the same write transaction that records its version, so a crash
//! mid-migration leaves the file at the previous version.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use super::{StoreError, StoreResult};

/// Small counters and identities, keyed by name (see [`meta_keys`]).
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Document id → JSON `DocumentRecord`.
pub(super) const DOCUMENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("documents");
/// Encoded `SourceKey` (import root + relative path) → document id.
pub(super) const SOURCES: TableDefinition<&str, u64> = TableDefinition::new("sources");
/// (document id, ordinal) → JSON `ChunkRecord`.
pub(super) const CHUNKS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("chunks");
/// Employee id → JSON `Employee`.
pub(super) const EMPLOYEES: TableDefinition<u64, &[u8]> = TableDefinition::new("employees");
/// Telegram user id → employee id, for joined employees.
pub(super) const TELEGRAM_USERS: TableDefinition<i64, u64> = TableDefinition::new("telegram_users");
/// blake3 hash (hex) of an invite code → JSON `Invite`. Codes themselves are never stored.
pub(super) const INVITES: TableDefinition<&str, &[u8]> = TableDefinition::new("invites");
/// Question id → JSON `QuestionRecord`: the conversation log.
pub(super) const QUESTIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("questions");
/// Employee id → JSON `Session`: dialogue state that must survive restarts.
pub(super) const SESSIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("sessions");
/// Outgoing messenger actions not yet delivered, in order: sequence → JSON action.
pub(super) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");
/// Onboarding plan id → JSON plan.
pub(super) const PLANS: TableDefinition<&str, &[u8]> = TableDefinition::new("plans");
/// Employee id → JSON `Assignment`.
pub(super) const ASSIGNMENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("assignments");
/// (employee id, task id) → JSON `TaskState`.
pub(super) const TASK_STATES: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("task_states");
/// (employee id, scheduled message key) → unix seconds it was queued: the once-only ledger.
pub(super) const NOTIFICATIONS: TableDefinition<(u64, &str), i64> = TableDefinition::new("notifications");
/// Broadcast id → JSON `Broadcast` (text, recipients).
pub(super) const BROADCASTS: TableDefinition<u64, &[u8]> = TableDefinition::new("broadcasts");
/// (broadcast id, chat) → 1 delivered, 0 refused by Telegram; absent: still queued.
pub(super) const DELIVERIES: TableDefinition<(u64, i64), u8> = TableDefinition::new("deliveries");
/// Text-valued settings of the store itself (see [`meta_keys`]).
pub(super) const META_TEXT: TableDefinition<&str, &str> = TableDefinition::new("meta_text");
/// Telegram update id → the question it logged, until the update is committed: a crash in
/// between re-handles the update without logging the question twice. Opened only in write
/// transactions, so it needs no migration.
pub(super) const UPDATE_QUESTIONS: TableDefinition<u64, u64> = TableDefinition::new("update_questions");
/// Telegram updates received and not yet handled: update id → the update as Telegram sent it
/// (JSON). Written before the poll that confirms them to Telegram, removed by the transaction
/// that commits their handling; created by its first write (a reader treats it as empty).
pub(super) const INBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("inbox");

/// Chunk embeddings of one model: (document id, ordinal) → little-endian f32 vector. One table
/// per model, so re-embedding with another model never mixes vectors of two models.
pub(super) fn embeddings_table(model: &str) -> TableDefinition<'_, (u64, u32), &'static [u8]> {
    TableDefinition::new(model)
}

/// The table name for a model's embeddings.
pub(super) fn embeddings_table_name(model: &str) -> String {
    format!("embeddings/{model}")
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
pub const SCHEMA_VERSION: u64 = 5;

type Migration = fn(&WriteTransaction) -> StoreResult<()>;

/// `MIGRATIONS[i]` upgrades a store from version `i` to `i + 1`.
const MIGRATIONS: [Migration; SCHEMA_VERSION as usize] =
    [create_v1, add_embeddings_v2, add_people_v3, add_outbox_v4, add_onboarding_v5];

fn create_v1(txn: &WriteTransaction) -> StoreResult<()> {
    txn.open_table(DOCUMENTS)?;
    txn.open_table(SOURCES)?;
    txn.open_table(CHUNKS)?;
    let mut meta = txn.open_table(META)?;
    meta.insert(meta_keys::REVISION, 0)?;
    meta.insert(meta_keys::NEXT_DOCUMENT_ID, 1)?;
    meta.insert(meta_keys::INSTANCE_ID, random_instance_id())?;
    Ok(())
}

/// Version 2: chunk embeddings (per-model tables, created on first use) and text metadata.
fn add_embeddings_v2(txn: &WriteTransaction) -> StoreResult<()> {
    txn.open_table(META_TEXT)?;
    Ok(())
}

/// Version 3: employees, invites, the conversation log and dialogue sessions.
fn add_people_v3(txn: &WriteTransaction) -> StoreResult<()> {
    txn.open_table(EMPLOYEES)?;
    txn.open_table(TELEGRAM_USERS)?;
    txn.open_table(INVITES)?;
    txn.open_table(QUESTIONS)?;
    txn.open_table(SESSIONS)?;
    let mut meta = txn.open_table(META)?;
    meta.insert(meta_keys::NEXT_EMPLOYEE_ID, 1)?;
    meta.insert(meta_keys::NEXT_QUESTION_ID, 1)?;
    Ok(())
}

/// Version 4: the Telegram update offset and the outbox of undelivered actions.
fn add_outbox_v4(txn: &WriteTransaction) -> StoreResult<()> {
    txn.open_table(OUTBOX)?;
    let mut meta = txn.open_table(META)?;
    meta.insert(meta_keys::TELEGRAM_OFFSET, 0)?;
    meta.insert(meta_keys::NEXT_OUTBOX_ID, 1)?;
    Ok(())
}

/// Version 5: onboarding plans, assignments, task progress, the scheduled-message ledger, and
/// broadcasts with their delivery records.
fn add_onboarding_v5(txn: &WriteTransaction) -> StoreResult<()> {
    txn.open_table(PLANS)?;
    txn.open_table(ASSIGNMENTS)?;
    txn.open_table(TASK_STATES)?;
    txn.open_table(NOTIFICATIONS)?;
    txn.open_table(BROADCASTS)?;
    txn.open_table(DELIVERIES)?;
    txn.open_table(META)?.insert(meta_keys::NEXT_BROADCAST_ID, 1)?;
    Ok(())
}

/// Brings the file up to [`SCHEMA_VERSION`], refusing files from a newer binary.
/// Refuses a redb file that holds tables but not Sputnik's: another program's database. A file
/// with no tables at all is one whose creation was interrupted, and is set up as new.
pub(super) fn check_is_sputnik(db: &Database, path: &Path) -> StoreResult<()> {
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

pub(super) fn migrate(db: &Database, path: &Path) -> StoreResult<()> {
    // The common case, a current file, needs no write transaction at all.
    {
        let txn = db.begin_read()?;
        if let Ok(meta) = txn.open_table(META)
            && meta.get(meta_keys::SCHEMA_VERSION)?.map(|v| v.value()) == Some(SCHEMA_VERSION)
        {
            return Ok(());
        }
    }
    loop {
        let txn = db.begin_write()?;
        let found = {
            let meta = txn.open_table(META)?;
            meta.get(meta_keys::SCHEMA_VERSION)?.map(|v| v.value()).unwrap_or(0)
        };
        if found == SCHEMA_VERSION {
            txn.abort()?;
            return Ok(());
        }
        if found > SCHEMA_VERSION {
            txn.abort()?;
            return Err(StoreError::TooNew { path: path.to_owned(), found, known: SCHEMA_VERSION });
        }
        MIGRATIONS[found as usize](&txn)?;
        txn.open_table(META)?.insert(meta_keys::SCHEMA_VERSION, found + 1)?;
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
