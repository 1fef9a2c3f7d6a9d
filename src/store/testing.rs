//! The store's tests run against both backends: a redb file in a temporary directory, and a
//! fresh database in a throw-away PostgreSQL cluster (`tests/pg-cluster`) that this test
//! process starts once and that stops when it exits.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Store;

/// A store to run one test against, opened (and reopened) by [`Backend::open`].
pub(crate) enum Backend {
    Redb(tempfile::TempDir),
    Postgres(String),
}

impl Backend {
    pub(crate) fn open(&self) -> Store {
        match self {
            Backend::Redb(dir) => Store::open(&dir.path().join("s.redb")).expect("open the redb store"),
            Backend::Postgres(url) => Store::connect(url).expect("connect to the test cluster"),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Redb(_) => "redb",
            Backend::Postgres(_) => "postgres",
        })
    }
}

/// A fresh, empty store of each backend.
pub(crate) fn backends() -> Vec<Backend> {
    vec![
        Backend::Redb(tempfile::tempdir().expect("a temporary directory")),
        Backend::Postgres(fresh_database()),
    ]
}

/// Runs `test` once per backend, saying on stderr which one a failure came from.
pub(crate) fn each_backend(test: impl Fn(&Backend)) {
    for backend in backends() {
        eprintln!("store backend: {backend}");
        test(&backend);
    }
}

struct Cluster {
    port: u16,
    bin: PathBuf,
    /// The CA that signed the server's certificate.
    ca: PathBuf,
    /// `tests/pg-cluster`, which stops the server and deletes its files when its stdin closes,
    /// that is when this process exits.
    _guard: Child,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// A new database in the test cluster, as a connection URL.
pub(crate) fn fresh_database() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let cluster = CLUSTER.get_or_init(start_cluster);
    let name = format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let status = Command::new(cluster.bin.join("createdb"))
        .args(["-h", "127.0.0.1", "-p", &cluster.port.to_string(), "-U", "sputnik", &name])
        .status()
        .expect("run createdb");
    assert!(status.success(), "createdb {name} failed");
    format!("postgresql://sputnik@127.0.0.1:{}/{name}", cluster.port)
}

/// The CA file that verifies the test cluster's certificate.
pub(crate) fn cluster_ca() -> PathBuf {
    CLUSTER.get_or_init(start_cluster).ca.clone()
}

fn start_cluster() -> Cluster {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pg-cluster");
    let mut guard = Command::new(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let mut line = String::new();
    BufReader::new(guard.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("read the cluster's port");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [port, bin, ca] = fields[..] else {
        panic!("tests/pg-cluster did not start a cluster (see its error above)");
    };
    Cluster {
        port: port.parse().expect("a port"),
        bin: PathBuf::from(bin),
        ca: PathBuf::from(ca),
        _guard: guard,
    }
}
