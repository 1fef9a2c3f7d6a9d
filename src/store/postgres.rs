//! The PostgreSQL backend underneath [`super::kv`]: a small pool of connections and byte-level
//! transactions over one relation, `sputnik_kv (tbl, k, v)`.
//!
//! The store's API is blocking, as redb's is, and is called from tokio tasks as well as from plain
//! threads. Each connection therefore runs its protocol on a thread of its own (with a one-thread
//! tokio runtime for the socket), and a query is awaited with `futures`' executor on the caller's
//! thread: that blocks the caller exactly as a redb read does, and never starts a runtime inside
//! another (which tokio forbids).
//!
//! Reads are `REPEATABLE READ` snapshots. Writes are serialised across every process on the
//! database by a transaction-scoped advisory lock taken first, so they behave as redb's single
//! writer does, and PostgreSQL's own replication carries them to standbys.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use futures::executor::block_on;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Socket, Statement};

use super::pg_url::{Tls, describe, parse_url};
use super::{StoreError, StoreResult};

/// Rows fetched per round trip of a scan.
pub(super) const PAGE_ROWS: usize = 512;

/// The advisory lock every write transaction holds ("Sputnik1").
const WRITE_LOCK: i64 = 0x5370_7574_6e69_6b31;

/// The session advisory lock of the one replica that serves Telegram ("Sputnik2").
pub(super) const SERVICE_LOCK: i64 = 0x5370_7574_6e69_6b32;

/// Idle connections kept for reuse: as many as a replica uses at full load (its handlers, the
/// sender, the follower), since opening one costs PostgreSQL a process.
const MAX_IDLE: usize = 40;

/// An idle connection unused this long is closed.
const IDLE_KEPT: std::time::Duration = std::time::Duration::from_secs(60);

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sputnik_kv (
    tbl text COLLATE \"C\" NOT NULL,
    k bytea NOT NULL,
    v bytea NOT NULL,
    PRIMARY KEY (tbl, k)
)";

pub(super) struct Pool {
    config: Config,
    tls: Tls,
    location: String,
    /// Idle connections, the most recently used last, with when each was.
    idle: Mutex<Vec<(Conn, std::time::Instant)>>,
    /// The connection a stand-by asks for a session lock on, kept between its attempts (one a
    /// second) instead of connecting anew each time.
    candidate: Mutex<Option<Conn>>,
    /// The connection that LISTENs (and on how many channels), and what a notice on each
    /// channel wakes.
    listener: Mutex<Option<(Conn, usize)>>,
    wakers: Arc<Mutex<Wakers>>,
}

type Wakers = HashMap<&'static str, Vec<Arc<tokio::sync::Notify>>>;

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("location", &self.location).finish_non_exhaustive()
    }
}

struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    fn statement(&mut self, sql: &str) -> StoreResult<Statement> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = block_on(self.client.prepare(sql)).map_err(error)?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

/// Connects with `tls` and runs the connection until its client is dropped, handing the client
/// to `sender` first; a notice it receives (when it LISTENs) wakes what `wakers` holds for its
/// channel.
async fn run_connection<T>(
    config: Config,
    tls: T,
    sender: std::sync::mpsc::Sender<StoreResult<Client>>,
    wakers: Option<Arc<Mutex<Wakers>>>,
) where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    match config.connect(tls).await {
        Ok((client, mut connection)) => {
            let _ = sender.send(Ok(client));
            // Runs until the client is dropped or the server goes away.
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match (message, &wakers) {
                    (Ok(tokio_postgres::AsyncMessage::Notification(notice)), Some(wakers)) => {
                        let wakers = wakers.lock().unwrap_or_else(|e| e.into_inner());
                        wakers.get(notice.channel()).into_iter().flatten().for_each(|w| w.notify_one());
                    }
                    (Ok(_), _) => {}
                    (Err(e), _) => {
                        tracing::warn!(error = %e, "PostgreSQL connection ended");
                        break;
                    }
                }
            }
        }
        Err(e) => {
            let _ = sender.send(Err(error(e)));
        }
    }
}

/// What a PostgreSQL error says, with the server's own message when there is one.
pub(super) fn error(e: tokio_postgres::Error) -> StoreError {
    let message = match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match std::error::Error::source(&e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    };
    StoreError::Postgres(message)
}

impl Pool {
    /// Parses `url`, connects once (so a wrong address or password is reported now, not at the
    /// first question) and creates the relation if it is missing.
    pub(super) fn open(url: &str) -> StoreResult<Arc<Pool>> {
        let (config, tls) = parse_url(url).map_err(|reason| StoreError::BadUrl { reason })?;
        let location = describe(&config);
        let pool = Arc::new(Pool {
            config,
            tls,
            location,
            idle: Mutex::new(Vec::new()),
            candidate: Mutex::new(None),
            listener: Mutex::new(None),
            wakers: Arc::default(),
        });
        let conn = pool.connect().map_err(|e| match e {
            StoreError::Postgres(reason) => {
                StoreError::Unreachable { location: pool.location.clone(), reason }
            }
            other => other,
        })?;
        pool.checkin(conn);
        let txn = pool.write()?;
        txn.query(SCHEMA, &[])?;
        txn.commit()?;
        Ok(pool)
    }

    pub(super) fn location(&self) -> &str {
        &self.location
    }

    fn connect(&self) -> StoreResult<Conn> {
        self.connect_with(None)
    }

    /// A new connection; `wakers` when it is to LISTEN: a notice wakes what waits on its channel.
    fn connect_with(&self, wakers: Option<Arc<Mutex<Wakers>>>) -> StoreResult<Conn> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let config = self.config.clone();
        let tls = self.tls.clone();
        std::thread::Builder::new()
            .name("sputnik-pg".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ =
                            sender.send(Err(StoreError::Postgres(format!("cannot start a connection: {e}"))));
                        return;
                    }
                };
                match tls {
                    Tls::Plain => runtime.block_on(run_connection(config, NoTls, sender, wakers)),
                    Tls::Verified(tls) => runtime.block_on(run_connection(config, tls, sender, wakers)),
                }
            })
            .map_err(|e| StoreError::Postgres(format!("cannot start a connection thread: {e}")))?;
        let client = receiver.recv().map_err(|_| {
            StoreError::Postgres("the connection thread ended before connecting".to_owned())
        })??;
        Ok(Conn { client, statements: HashMap::new() })
    }

    /// Takes the session advisory lock `key` on a connection of its own, which holds it until
    /// it is dropped or the server loses it; `None` when another session holds it.
    pub(super) fn try_session_lock(&self, key: i64) -> StoreResult<Option<Held>> {
        let mut candidate = self.candidate.lock().unwrap_or_else(|e| e.into_inner());
        let conn = match candidate.take() {
            Some(conn) if !conn.client.is_closed() => conn,
            _ => self.connect()?,
        };
        let rows = block_on(conn.client.query("SELECT pg_try_advisory_lock($1)", &[&key])).map_err(error)?;
        if rows.first().is_some_and(|row| row.get::<_, bool>(0)) {
            return Ok(Some(Held { conn }));
        }
        *candidate = Some(conn);
        Ok(None)
    }

    /// Wakes `wake` whenever a transaction that notifies `channel` commits, in any process.
    pub(super) fn wake_on(&self, channel: &'static str, wake: Arc<tokio::sync::Notify>) -> StoreResult<()> {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner()).entry(channel).or_default().push(wake);
        self.listen()
    }

    /// Makes sure the listening connection is up (after a network cut or a server restart it is
    /// opened again) and LISTENs on every channel something waits on.
    pub(super) fn listen(&self) -> StoreResult<()> {
        let mut listener = self.listener.lock().unwrap_or_else(|e| e.into_inner());
        let channels: Vec<&str> =
            self.wakers.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
        if channels.is_empty() {
            return Ok(());
        }
        let conn = match listener.take() {
            Some((conn, listening)) if !conn.client.is_closed() => {
                if listening == channels.len() {
                    *listener = Some((conn, listening));
                    return Ok(());
                }
                conn
            }
            _ => self.connect_with(Some(self.wakers.clone()))?,
        };
        let sql: String = channels.iter().map(|c| format!("LISTEN {c};")).collect();
        block_on(conn.client.batch_execute(&sql)).map_err(error)?;
        *listener = Some((conn, channels.len()));
        Ok(())
    }

    fn checkout(&self) -> StoreResult<Conn> {
        loop {
            let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop().map(|(conn, _)| conn);
            match idle {
                Some(conn) if conn.client.is_closed() => continue,
                Some(conn) => return Ok(conn),
                None => return self.connect(),
            }
        }
    }

    fn checkin(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        idle.retain(|(_, used)| now.duration_since(*used) < IDLE_KEPT);
        if !conn.client.is_closed() && idle.len() < MAX_IDLE {
            idle.push((conn, now));
        }
    }

    fn begin(self: &Arc<Self>, sql: &str) -> StoreResult<Txn> {
        let conn = self.checkout()?;
        block_on(conn.client.batch_execute(sql)).map_err(error)?;
        Ok(Txn { pool: Arc::clone(self), conn: RefCell::new(Some(conn)), deferred: RefCell::default() })
    }

    pub(super) fn read(self: &Arc<Self>) -> StoreResult<Txn> {
        self.begin("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    }

    /// A write transaction, holding the write lock once this returns (one round trip for both).
    pub(super) fn write(self: &Arc<Self>) -> StoreResult<Txn> {
        self.begin(&format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({WRITE_LOCK})"
        ))
    }
}

/// A session advisory lock, held as long as its connection lives.
pub(super) struct Held {
    conn: Conn,
}

impl Held {
    /// Asks the server whether the session (and so the lock) is still there: a dropped
    /// connection or a restarted server has released it.
    pub(super) fn check(&self) -> StoreResult<()> {
        block_on(self.conn.client.simple_query("SELECT 1")).map_err(error)?;
        Ok(())
    }
}

/// One transaction on one connection. Dropped without [`Txn::commit`], it rolls back.
///
/// Writes return nothing the store needs, so they wait and go out with the transaction's next
/// query or its commit, pipelined in one round trip: the write lock is held for as many round
/// trips as the transaction reads, not as many as it writes.
pub(super) struct Txn {
    pool: Arc<Pool>,
    conn: RefCell<Option<Conn>>,
    deferred: RefCell<Vec<Deferred>>,
}

/// A write waiting for the transaction's next round trip: its statement and parameters.
struct Deferred {
    sql: String,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
    bytes: usize,
}

/// Deferred writes are sent once this many bytes of keys and values wait.
const DEFERRED_BYTES: usize = 4 << 20;

/// Sends `deferred` and then whatever `last` sends, in order and in one round trip; the writes'
/// first error, else what `last` returned.
fn pipelined<T>(
    conn: &mut Conn,
    deferred: &[Deferred],
    last: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
) -> StoreResult<T> {
    let statements = deferred.iter().map(|d| conn.statement(&d.sql)).collect::<StoreResult<Vec<_>>>()?;
    let params: Vec<Vec<&(dyn ToSql + Sync)>> =
        deferred.iter().map(|d| d.params.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect()).collect();
    let client = &conn.client;
    // `join` polls the writes first, and each request is sent when first polled.
    let writes =
        futures::future::try_join_all(statements.iter().zip(&params).map(|(s, p)| client.execute(s, p)));
    let (written, result) = block_on(futures::future::join(writes, last(client)));
    written.map_err(error)?;
    result.map_err(error)
}

fn bound_condition(bound: &Bound<Vec<u8>>, upper: bool, params: &mut Vec<Vec<u8>>, sql: &mut String) {
    let op = match (bound, upper) {
        (Bound::Unbounded, _) => return,
        (Bound::Included(_), false) => ">=",
        (Bound::Excluded(_), false) => ">",
        (Bound::Included(_), true) => "<=",
        (Bound::Excluded(_), true) => "<",
    };
    if let Bound::Included(key) | Bound::Excluded(key) = bound {
        params.push(key.clone());
    }
    sql.push_str(&format!(" AND k {op} ${}", params.len() + 1));
}

impl Txn {
    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<tokio_postgres::Row>> {
        let deferred = self.deferred.take();
        let mut conn = self.conn.borrow_mut();
        let conn = conn.as_mut().expect("a transaction is used only until it ends");
        let statement = conn.statement(sql)?;
        pipelined(conn, &deferred, async |client| client.query(&statement, params).await)
    }

    /// Keeps a write for the next round trip; sends what waits at once past [`DEFERRED_BYTES`]
    /// (a large copy or import streams instead of waiting whole in memory).
    fn defer(&self, sql: String, params: Vec<Box<dyn ToSql + Sync + Send>>, bytes: usize) -> StoreResult<()> {
        let mut deferred = self.deferred.borrow_mut();
        deferred.push(Deferred { sql, params, bytes });
        if deferred.iter().map(|d| d.bytes).sum::<usize>() < DEFERRED_BYTES {
            return Ok(());
        }
        let deferred = std::mem::take(&mut *deferred);
        let mut conn = self.conn.borrow_mut();
        let conn = conn.as_mut().expect("a transaction is used only until it ends");
        pipelined(conn, &deferred, async |_| Ok(()))
    }

    pub(super) fn get(&self, table: &str, key: &[u8]) -> StoreResult<Option<Vec<u8>>> {
        let rows = self.query("SELECT v FROM sputnik_kv WHERE tbl = $1 AND k = $2", &[&table, &key])?;
        Ok(rows.first().map(|row| row.get(0)))
    }

    /// The rows of `keys` that exist, in one round trip.
    pub(super) fn get_many(&self, table: &str, keys: &[Vec<u8>]) -> StoreResult<HashMap<Vec<u8>, Vec<u8>>> {
        let rows = self
            .query("SELECT k, v FROM sputnik_kv WHERE tbl = $1 AND k = ANY($2::bytea[])", &[&table, &keys])?;
        Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Up to [`PAGE_ROWS`] rows between the bounds, in key order or reversed.
    pub(super) fn page(
        &self,
        table: &str,
        lo: &Bound<Vec<u8>>,
        hi: &Bound<Vec<u8>>,
        reverse: bool,
    ) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut sql = "SELECT k, v FROM sputnik_kv WHERE tbl = $1".to_owned();
        let mut keys = Vec::new();
        bound_condition(lo, false, &mut keys, &mut sql);
        bound_condition(hi, true, &mut keys, &mut sql);
        sql.push_str(if reverse { " ORDER BY k DESC" } else { " ORDER BY k" });
        sql.push_str(&format!(" LIMIT {PAGE_ROWS}"));
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&table];
        params.extend(keys.iter().map(|k| k as &(dyn ToSql + Sync)));
        let rows = self.query(&sql, &params)?;
        Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    pub(super) fn count(&self, table: &str) -> StoreResult<u64> {
        let rows = self.query("SELECT count(*) FROM sputnik_kv WHERE tbl = $1", &[&table])?;
        Ok(rows.first().map_or(0, |row| row.get::<_, i64>(0)) as u64)
    }

    /// Notifies `channel` when (and only if) the transaction commits.
    pub(super) fn notify(&self, channel: &'static str) -> StoreResult<()> {
        self.defer("SELECT pg_notify($1, '')".to_owned(), vec![Box::new(channel)], 0)
    }

    /// Inserts or replaces rows, all in one statement (sent with the next round trip).
    pub(super) fn put(&self, table: &str, rows: Vec<(Vec<u8>, Vec<u8>)>) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let bytes = rows.iter().map(|(k, v)| k.len() + v.len()).sum();
        let (keys, values): (Vec<Vec<u8>>, Vec<Vec<u8>>) = rows.into_iter().unzip();
        self.defer(
            "INSERT INTO sputnik_kv (tbl, k, v) SELECT $1, k, v FROM unnest($2::bytea[], $3::bytea[]) AS r(k, v) \
             ON CONFLICT (tbl, k) DO UPDATE SET v = EXCLUDED.v"
                .to_owned(),
            vec![Box::new(table.to_owned()), Box::new(keys), Box::new(values)],
            bytes,
        )
    }

    /// Deletes the rows between the bounds (sent with the next round trip).
    pub(super) fn delete(&self, table: &str, lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> StoreResult<()> {
        let mut sql = "DELETE FROM sputnik_kv WHERE tbl = $1".to_owned();
        let mut keys = Vec::new();
        bound_condition(lo, false, &mut keys, &mut sql);
        bound_condition(hi, true, &mut keys, &mut sql);
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(table.to_owned())];
        params.extend(keys.into_iter().map(|k| Box::new(k) as Box<dyn ToSql + Sync + Send>));
        self.defer(sql, params, 0)
    }

    /// Commits (the deferred writes first, in the same round trip) or rolls back.
    fn end(&self, commit: bool) -> StoreResult<()> {
        let deferred = self.deferred.take();
        let Some(mut conn) = self.conn.borrow_mut().take() else { return Ok(()) };
        let ended = if commit {
            pipelined(&mut conn, &deferred, async |client| client.batch_execute("COMMIT").await)
        } else {
            block_on(conn.client.batch_execute("ROLLBACK")).map_err(error)
        };
        if ended.is_ok() {
            self.pool.checkin(conn);
        }
        ended
    }

    pub(super) fn commit(self) -> StoreResult<()> {
        self.end(true)
    }

    pub(super) fn rollback(self) -> StoreResult<()> {
        self.end(false)
    }
}

impl Drop for Txn {
    fn drop(&mut self) {
        // A connection whose rollback fails is closed, not reused.
        let _ = self.end(false);
    }
}

#[cfg(test)]
mod tests {
    use crate::store::testing::fresh_database;
    use crate::store::{NewEmployee, Role, Store, StoreError};

    fn employee(name: String) -> NewEmployee {
        NewEmployee {
            name,
            department: "Ops".into(),
            position: None,
            role: Role::Employee,
            groups: vec![],
            start_date: None,
        }
    }

    /// Replicas share one database: their writes take turns, so counters never hand out an id
    /// twice and no append is lost.
    #[test]
    fn writers_on_many_handles_take_turns() {
        let url = fresh_database();
        let stores: Vec<Store> = (0..4).map(|_| Store::connect(&url).unwrap()).collect();
        std::thread::scope(|scope| {
            for (n, store) in stores.iter().enumerate() {
                scope.spawn(move || {
                    for i in 0..25 {
                        store.create_employee(employee(format!("{n}-{i}")), 1).unwrap();
                        store.enqueue(&[format!("{n}-{i}")]).unwrap();
                    }
                });
            }
        });
        let ids: Vec<u64> = stores[0].employees().unwrap().iter().map(|e| e.id.0).collect();
        assert_eq!(ids, (1..=100).collect::<Vec<_>>());
        let queued: Vec<(u64, String)> = stores[3].outbox(1000).unwrap();
        assert_eq!(queued.iter().map(|(id, _)| *id).collect::<Vec<_>>(), (1..=100).collect::<Vec<_>>());
    }

    #[test]
    fn a_wrong_url_or_an_unreachable_server_is_a_clear_error_without_the_password() {
        let err = Store::connect("postgresql://sputnik@127.0.0.1:notaport/db").unwrap_err();
        assert!(matches!(err, StoreError::BadUrl { .. }), "{err}");
        assert!(err.is_user_error());

        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let err = Store::connect(&format!("postgresql://sputnik:hunter2@127.0.0.1:{port}/kb")).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, StoreError::Unreachable { .. }), "{message}");
        assert!(message.contains(&format!("postgresql://sputnik@127.0.0.1:{port}/kb")), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    /// The store is called from tokio tasks (the bot, the HTTP API): a query there blocks the
    /// task's thread as a redb read does, and must not try to start a runtime inside one.
    #[test]
    fn the_store_works_from_inside_async_tasks() {
        let store = std::sync::Arc::new(Store::connect(&fresh_database()).unwrap());
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        let created = runtime.block_on(async {
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        store.create_employee(employee(format!("async {i}")), 1).unwrap().id
                    })
                })
                .collect();
            let mut ids = Vec::new();
            for task in tasks {
                ids.push(task.await.unwrap());
            }
            ids
        });
        assert_eq!(created.len(), 8);
        assert_eq!(store.employees().unwrap().len(), 8);
    }

    /// `sslmode=require` (or libpq's verify-full) is TLS with the certificate verified: against
    /// the CA file `sslrootcert` names, and without one against the system's trust store, which
    /// does not know the test cluster's CA — so that connection is refused, not made unverified.
    #[test]
    fn tls_is_verified_against_the_named_ca_or_the_system_store() {
        let url = fresh_database();
        let ca = crate::store::testing::cluster_ca();
        let ssl_of = |url: &str| -> bool {
            let pool = super::Pool::open(url).unwrap();
            let txn = pool.read().unwrap();
            txn.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).unwrap()[0].get(0)
        };
        assert!(!ssl_of(&url), "no sslmode: plain");
        for mode in ["require", "verify-full"] {
            let verified = format!("{url}?sslmode={mode}&sslrootcert={}", ca.display());
            assert!(ssl_of(&verified), "{mode}");
            assert!(Store::connect(&verified).unwrap().employees().unwrap().is_empty());
        }
        let err = Store::connect(&format!("{url}?sslmode=require")).unwrap_err();
        assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
        assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
        let err =
            Store::connect(&format!("{url}?sslmode=require&sslrootcert=/nonexistent/ca.pem")).unwrap_err();
        assert!(
            matches!(err, StoreError::BadUrl { .. }) && err.to_string().contains("/nonexistent/ca.pem"),
            "{err}"
        );
    }

    /// Scans come in pages; one longer than a page returns every row once, in order, both ways.
    #[test]
    fn scans_longer_than_a_page_return_every_row_in_order() {
        let store = Store::connect(&fresh_database()).unwrap();
        let n = super::PAGE_ROWS * 2 + 7;
        let actions: Vec<u64> = (0..n as u64).collect();
        store.enqueue(&actions).unwrap();
        let queued: Vec<(u64, u64)> = store.outbox(usize::MAX).unwrap();
        assert_eq!(queued.len(), n);
        assert!(queued.iter().all(|(id, action)| *id == action + 1));
    }
}
