//! The store's tables as both backends hold them: typed keys and values, transactions that read
//! and write them, and nothing else. Every store operation is written once, against this, and runs
//! the same on the embedded redb file and on PostgreSQL.
//!
//! - redb keeps each [`Table`] as a redb table of the same name and types, as it always has, so
//!   a file written before this layer existed opens unchanged.
//! - PostgreSQL keeps every table in one relation, `(tbl, k, v)`, keyed by `(tbl, k)`, with each
//!   key written in an order-preserving byte form (integers big-endian, signed ones with their
//!   sign bit flipped, a string last in a tuple as its UTF-8 bytes), so a range scan returns the
//!   rows in the order redb does.
//!
//! A write transaction is exclusive on both: redb has one writer at a time, and on PostgreSQL each
//! one begins by taking the store's advisory lock, so every read-modify-write below (a counter, an
//! offset, a ledger entry) is as safe across replicas as it is in one process.

use std::borrow::Cow;
use std::marker::PhantomData;
use std::ops::{Bound, ControlFlow};

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};

mod fields;

pub(super) use fields::{Field, KeyField};

use super::postgres;
use super::{StoreError, StoreResult};

/// A named table of `K` → `V`.
#[derive(Debug, Clone)]
pub(super) struct Table<K, V> {
    name: Cow<'static, str>,
    types: PhantomData<fn() -> (K, V)>,
}

impl<K: KeyField, V: Field> Table<K, V> {
    pub(super) const fn new(name: &'static str) -> Self {
        Table { name: Cow::Borrowed(name), types: PhantomData }
    }

    /// A table whose name is known only at run time (one per embedding model).
    pub(super) fn named(name: String) -> Self {
        Table { name: Cow::Owned(name), types: PhantomData }
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    fn redb(&self) -> TableDefinition<'_, K::Redb, V::Redb> {
        TableDefinition::new(&self.name)
    }
}

/// Which rows of a table a scan visits, and in which direction.
#[derive(Debug, Clone)]
pub(super) struct Span<K> {
    pub lo: Bound<K>,
    pub hi: Bound<K>,
    pub reverse: bool,
}

impl<K> Span<K> {
    pub(super) fn all() -> Self {
        Span { lo: Bound::Unbounded, hi: Bound::Unbounded, reverse: false }
    }

    /// `lo..=hi`.
    pub(super) fn between(lo: K, hi: K) -> Self {
        Span { lo: Bound::Included(lo), hi: Bound::Included(hi), reverse: false }
    }

    /// `lo..hi`.
    pub(super) fn from_until(lo: K, hi: K) -> Self {
        Span { lo: Bound::Included(lo), hi: Bound::Excluded(hi), reverse: false }
    }

    pub(super) fn rev(self) -> Self {
        Span { reverse: !self.reverse, ..self }
    }
}

/// The keys of one document's chunks (or of their vectors).
pub(super) fn document_rows(id: u64) -> Span<(u64, u32)> {
    Span::between((id, 0), (id, u32::MAX))
}

fn redb_bound<K: Field>(bound: &Bound<K>) -> Bound<<K::Redb as redb::Value>::SelfType<'_>> {
    match bound {
        Bound::Included(k) => Bound::Included(k.to_redb()),
        Bound::Excluded(k) => Bound::Excluded(k.to_redb()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn byte_bound<K: Field>(bound: &Bound<K>) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(k) => Bound::Included(k.to_bytes()),
        Bound::Excluded(k) => Bound::Excluded(k.to_bytes()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn redb_get<K: KeyField, V: Field>(
    table: &impl ReadableTable<K::Redb, V::Redb>,
    key: &K,
) -> StoreResult<Option<V>> {
    Ok(table.get(key.to_redb())?.map(|v| V::from_redb(v.value())))
}

/// One row of a redb range, as its iterator yields it.
type RedbRow<'a, K, V> = Result<
    (redb::AccessGuard<'a, <K as Field>::Redb>, redb::AccessGuard<'a, <V as Field>::Redb>),
    redb::StorageError,
>;

fn redb_scan<K: KeyField, V: Field, E: From<StoreError>>(
    table: &impl ReadableTable<K::Redb, V::Redb>,
    span: &Span<K>,
    visit: &mut impl FnMut(K, V) -> Result<ControlFlow<()>, E>,
) -> Result<(), E> {
    let range = table.range((redb_bound(&span.lo), redb_bound(&span.hi))).map_err(StoreError::from)?;
    let mut step = |row: RedbRow<'_, K, V>| {
        let (key, value) = row.map_err(StoreError::from)?;
        visit(K::from_redb(key.value()), V::from_redb(value.value()))
    };
    if span.reverse {
        for row in range.rev() {
            if step(row)?.is_break() {
                break;
            }
        }
    } else {
        for row in range {
            if step(row)?.is_break() {
                break;
            }
        }
    }
    Ok(())
}

fn corrupt_row(table: &str) -> StoreError {
    StoreError::Postgres(format!("a row of table {table} does not decode: not written by this Sputnik"))
}

fn pg_get<K: KeyField, V: Field>(
    txn: &postgres::Txn,
    table: &Table<K, V>,
    key: &K,
) -> StoreResult<Option<V>> {
    match txn.get(table.name(), &key.to_bytes())? {
        Some(bytes) => V::from_bytes(&bytes).map(Some).ok_or_else(|| corrupt_row(table.name())),
        None => Ok(None),
    }
}

fn pg_scan<K: KeyField, V: Field, E: From<StoreError>>(
    txn: &postgres::Txn,
    table: &Table<K, V>,
    span: &Span<K>,
    visit: &mut impl FnMut(K, V) -> Result<ControlFlow<()>, E>,
) -> Result<(), E> {
    let (mut lo, mut hi) = (byte_bound(&span.lo), byte_bound(&span.hi));
    loop {
        let page = txn.page(table.name(), &lo, &hi, span.reverse)?;
        let full = page.len() == postgres::PAGE_ROWS;
        let mut last = None;
        for (key, value) in page {
            let k = K::from_bytes(&key).ok_or_else(|| corrupt_row(table.name()))?;
            let v = V::from_bytes(&value).ok_or_else(|| corrupt_row(table.name()))?;
            if visit(k, v)?.is_break() {
                return Ok(());
            }
            last = Some(key);
        }
        match (full, last) {
            (true, Some(last)) if span.reverse => hi = Bound::Excluded(last),
            (true, Some(last)) => lo = Bound::Excluded(last),
            _ => return Ok(()),
        }
    }
}

/// Any table, whatever its types: for what is done to every table alike (reading each one
/// through, copying a store).
pub(super) trait AnyTable: Sync {
    fn name(&self) -> &str;
    /// How many rows it holds.
    fn rows(&self, txn: &Read) -> StoreResult<u64>;
    /// How many rows it holds, as a write transaction sees it.
    fn rows_in(&self, txn: &Write) -> StoreResult<u64>;
    /// Reads every row; returns how many there are.
    fn read_through(&self, txn: &Read) -> StoreResult<u64>;
    /// Copies every row from `from` into `to`, in batches; `copied` hears each batch's size.
    fn copy(&self, from: &Read, to: &Write, copied: &mut dyn FnMut(u64)) -> StoreResult<()>;
}

/// Rows written per statement when a table is copied.
const COPY_BATCH: usize = 1000;

impl<K: KeyField, V: Field> AnyTable for Table<K, V> {
    fn name(&self) -> &str {
        &self.name
    }

    fn rows(&self, txn: &Read) -> StoreResult<u64> {
        txn.len(self)
    }

    fn rows_in(&self, txn: &Write) -> StoreResult<u64> {
        txn.len(self)
    }

    fn read_through(&self, txn: &Read) -> StoreResult<u64> {
        let mut rows = 0;
        txn.scan(self, Span::all(), |_, _| {
            rows += 1;
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        Ok(rows)
    }

    fn copy(&self, from: &Read, to: &Write, copied: &mut dyn FnMut(u64)) -> StoreResult<()> {
        let mut batch: Vec<(K, V)> = Vec::with_capacity(COPY_BATCH);
        let mut flush = |batch: &mut Vec<(K, V)>| -> StoreResult<()> {
            // Nothing to write creates nothing: a table made by its first write stays unmade.
            if batch.is_empty() {
                return Ok(());
            }
            to.insert_all(self, batch.iter().map(|(k, v)| (k.clone(), v)))?;
            copied(batch.len() as u64);
            batch.clear();
            Ok(())
        };
        from.scan(self, Span::all(), |k, v| {
            batch.push((k, v));
            if batch.len() == COPY_BATCH {
                flush(&mut batch)?;
            }
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        flush(&mut batch)
    }
}

/// What both kinds of transaction can read.
pub(super) trait Reader {
    fn get<K: KeyField, V: Field>(&self, table: &Table<K, V>, key: &K) -> StoreResult<Option<V>>;

    /// Visits the rows of `span` in key order (or reversed) until `visit` breaks. `visit` may
    /// read other tables of the same transaction, never the one being scanned.
    fn scan<K: KeyField, V: Field, E: From<StoreError>>(
        &self,
        table: &Table<K, V>,
        span: Span<K>,
        visit: impl FnMut(K, V) -> Result<ControlFlow<()>, E>,
    ) -> Result<(), E>;

    fn len<K: KeyField, V: Field>(&self, table: &Table<K, V>) -> StoreResult<u64>;

    /// The values of `keys`, in their order (on PostgreSQL in one round trip).
    fn get_many<K: KeyField, V: Field>(
        &self,
        table: &Table<K, V>,
        keys: &[K],
    ) -> StoreResult<Vec<Option<V>>> {
        keys.iter().map(|key| self.get(table, key)).collect()
    }

    /// Every row of `span`, in order.
    fn rows<K: KeyField, V: Field>(&self, table: &Table<K, V>, span: Span<K>) -> StoreResult<Vec<(K, V)>> {
        let mut out = Vec::new();
        self.scan(table, span, |k, v| {
            out.push((k, v));
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    fn is_empty<K: KeyField, V: Field>(&self, table: &Table<K, V>) -> StoreResult<bool> {
        let mut empty = true;
        self.scan(table, Span::all(), |_, _| {
            empty = false;
            Ok::<_, StoreError>(ControlFlow::Break(()))
        })?;
        Ok(empty)
    }
}

/// A read transaction: one consistent snapshot.
pub(super) enum Read {
    Redb(redb::ReadTransaction),
    Postgres(postgres::Txn),
}

/// A write transaction: exclusive, and all or nothing. One lives at a time per store (both
/// backends serialise writers), so the size of redb's variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Write {
    Redb(redb::WriteTransaction),
    Postgres(postgres::Txn),
}

/// Opens `table` in a redb read transaction; a table created by its first write that has not
/// been written yet reads as empty.
fn redb_read_table<K: KeyField, V: Field>(
    txn: &redb::ReadTransaction,
    table: &Table<K, V>,
) -> StoreResult<Option<redb::ReadOnlyTable<K::Redb, V::Redb>>> {
    match txn.open_table(table.redb()) {
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        opened => Ok(Some(opened?)),
    }
}

impl Reader for Read {
    fn get<K: KeyField, V: Field>(&self, table: &Table<K, V>, key: &K) -> StoreResult<Option<V>> {
        match self {
            Read::Redb(txn) => match redb_read_table(txn, table)? {
                Some(t) => redb_get(&t, key),
                None => Ok(None),
            },
            Read::Postgres(txn) => pg_get(txn, table, key),
        }
    }

    fn get_many<K: KeyField, V: Field>(
        &self,
        table: &Table<K, V>,
        keys: &[K],
    ) -> StoreResult<Vec<Option<V>>> {
        match self {
            Read::Redb(txn) => match redb_read_table(txn, table)? {
                Some(t) => keys.iter().map(|key| redb_get(&t, key)).collect(),
                None => Ok(keys.iter().map(|_| None).collect()),
            },
            Read::Postgres(txn) => {
                let keys: Vec<Vec<u8>> = keys.iter().map(|key| key.to_bytes()).collect();
                let mut found = txn.get_many(table.name(), &keys)?;
                keys.iter()
                    .map(|key| match found.remove(key) {
                        Some(bytes) => {
                            V::from_bytes(&bytes).map(Some).ok_or_else(|| corrupt_row(table.name()))
                        }
                        None => Ok(None),
                    })
                    .collect()
            }
        }
    }

    fn scan<K: KeyField, V: Field, E: From<StoreError>>(
        &self,
        table: &Table<K, V>,
        span: Span<K>,
        mut visit: impl FnMut(K, V) -> Result<ControlFlow<()>, E>,
    ) -> Result<(), E> {
        match self {
            Read::Redb(txn) => match redb_read_table(txn, table)? {
                Some(t) => redb_scan(&t, &span, &mut visit),
                None => Ok(()),
            },
            Read::Postgres(txn) => pg_scan(txn, table, &span, &mut visit),
        }
    }

    fn len<K: KeyField, V: Field>(&self, table: &Table<K, V>) -> StoreResult<u64> {
        match self {
            Read::Redb(txn) => match redb_read_table(txn, table)? {
                Some(t) => Ok(t.len()?),
                None => Ok(0),
            },
            Read::Postgres(txn) => txn.count(table.name()),
        }
    }
}

impl Reader for Write {
    fn get<K: KeyField, V: Field>(&self, table: &Table<K, V>, key: &K) -> StoreResult<Option<V>> {
        match self {
            Write::Redb(txn) => redb_get(&txn.open_table(table.redb())?, key),
            Write::Postgres(txn) => pg_get(txn, table, key),
        }
    }

    fn scan<K: KeyField, V: Field, E: From<StoreError>>(
        &self,
        table: &Table<K, V>,
        span: Span<K>,
        mut visit: impl FnMut(K, V) -> Result<ControlFlow<()>, E>,
    ) -> Result<(), E> {
        match self {
            // Visited as it is read: reading a whole table out first made every import's
            // emptiness check read every document. `visit` must not open the same table again
            // (redb refuses a second handle in a write transaction; it would be an error here).
            Write::Redb(txn) => {
                redb_scan(&txn.open_table(table.redb()).map_err(StoreError::from)?, &span, &mut visit)
            }
            Write::Postgres(txn) => pg_scan(txn, table, &span, &mut visit),
        }
    }

    fn len<K: KeyField, V: Field>(&self, table: &Table<K, V>) -> StoreResult<u64> {
        match self {
            Write::Redb(txn) => Ok(txn.open_table(table.redb())?.len()?),
            Write::Postgres(txn) => txn.count(table.name()),
        }
    }
}

impl Write {
    pub(super) fn insert<K: KeyField, V: Field>(
        &self,
        table: &Table<K, V>,
        key: &K,
        value: &V,
    ) -> StoreResult<()> {
        match self {
            Write::Redb(txn) => {
                txn.open_table(table.redb())?.insert(key.to_redb(), value.to_redb())?;
                Ok(())
            }
            Write::Postgres(txn) => txn.put(table.name(), vec![(key.to_bytes(), value.to_bytes())]),
        }
    }

    /// Inserts many rows; on PostgreSQL in one round trip.
    pub(super) fn insert_all<'r, K: KeyField + 'r, V: Field + 'r>(
        &self,
        table: &Table<K, V>,
        rows: impl IntoIterator<Item = (K, &'r V)>,
    ) -> StoreResult<()> {
        match self {
            Write::Redb(txn) => {
                let mut t = txn.open_table(table.redb())?;
                for (key, value) in rows {
                    t.insert(key.to_redb(), value.to_redb())?;
                }
                Ok(())
            }
            Write::Postgres(txn) => {
                txn.put(table.name(), rows.into_iter().map(|(k, v)| (k.to_bytes(), v.to_bytes())).collect())
            }
        }
    }

    /// Removes `key` (if it is there).
    pub(super) fn remove<K: KeyField, V: Field>(&self, table: &Table<K, V>, key: &K) -> StoreResult<()> {
        match self {
            Write::Redb(txn) => {
                txn.open_table(table.redb())?.remove(key.to_redb())?;
            }
            Write::Postgres(txn) => {
                let key = Bound::Included(key.to_bytes());
                txn.delete(table.name(), &key, &key)?;
            }
        }
        Ok(())
    }

    /// Removes every row of `span`.
    pub(super) fn remove_span<K: KeyField, V: Field>(
        &self,
        table: &Table<K, V>,
        span: Span<K>,
    ) -> StoreResult<()> {
        match self {
            Write::Redb(txn) => {
                txn.open_table(table.redb())?
                    .retain_in((redb_bound(&span.lo), redb_bound(&span.hi)), |_, _| false)?;
                Ok(())
            }
            Write::Postgres(txn) => txn.delete(table.name(), &byte_bound(&span.lo), &byte_bound(&span.hi)),
        }
    }

    /// Keeps the rows for which `keep` holds; returns how many it removed.
    pub(super) fn retain<K: KeyField, V: Field>(
        &self,
        table: &Table<K, V>,
        mut keep: impl FnMut(&K, &V) -> bool,
    ) -> StoreResult<u64> {
        let mut doomed = Vec::new();
        self.scan(table, Span::all(), |k, v| {
            if !keep(&k, &v) {
                doomed.push(k);
            }
            Ok::<_, StoreError>(ControlFlow::Continue(()))
        })?;
        for key in &doomed {
            self.remove(table, key)?;
        }
        Ok(doomed.len() as u64)
    }

    /// Makes sure `table` exists (redb creates a table on first open; PostgreSQL's relation holds
    /// every table already).
    pub(super) fn create<K: KeyField, V: Field>(&self, table: &Table<K, V>) -> StoreResult<()> {
        if let Write::Redb(txn) = self {
            txn.open_table(table.redb())?;
        }
        Ok(())
    }

    /// Drops `table` and every row in it.
    pub(super) fn delete_table<K: KeyField, V: Field>(&self, table: &Table<K, V>) -> StoreResult<()> {
        match self {
            Write::Redb(txn) => {
                txn.delete_table(table.redb())?;
                Ok(())
            }
            Write::Postgres(txn) => txn.delete(table.name(), &Bound::Unbounded, &Bound::Unbounded),
        }
    }

    /// Tells the other processes on the store that this transaction wrote something `channel`
    /// is about, once it commits. Only PostgreSQL has other processes.
    pub(super) fn notify(&self, channel: &'static str) -> StoreResult<()> {
        match self {
            Write::Redb(_) => Ok(()),
            Write::Postgres(txn) => txn.notify(channel),
        }
    }

    pub(super) fn commit(self) -> StoreResult<()> {
        match self {
            Write::Redb(txn) => Ok(txn.commit()?),
            Write::Postgres(txn) => txn.commit(),
        }
    }

    /// Ends the transaction without changing anything.
    pub(super) fn abort(self) -> StoreResult<()> {
        match self {
            Write::Redb(txn) => Ok(txn.abort()?),
            Write::Postgres(txn) => txn.rollback(),
        }
    }
}
