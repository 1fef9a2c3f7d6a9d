//! The PostgreSQL store through the real binary: an embedded store moved into PostgreSQL with
//! `copy-store`, then searched, imported into and served from there by a replica that has only
//! its own, empty data directory. The cluster is `tests/pg-cluster`, started once per run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::*;
use crate::fake_bot::*;

struct Cluster {
    port: u16,
    bin: PathBuf,
    /// Stops the cluster and deletes its files when this process exits (its stdin closes).
    _guard: Child,
}

/// A new, empty database in the run's cluster, as a connection URL.
pub fn fresh_database() -> String {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let cluster = CLUSTER.get_or_init(|| {
        let mut guard = Command::new(repo_path("tests/pg-cluster"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run tests/pg-cluster");
        let mut line = String::new();
        BufReader::new(guard.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let (port, bin) = line.trim().split_once(' ').expect("tests/pg-cluster started a cluster");
        Cluster { port: port.parse().unwrap(), bin: PathBuf::from(bin), _guard: guard }
    });
    let name = format!("it{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let created = Command::new(cluster.bin.join("createdb"))
        .args(["-h", "127.0.0.1", "-p", &cluster.port.to_string(), "-U", "sputnik", &name])
        .status()
        .unwrap();
    assert!(created.success());
    format!("postgresql://sputnik@127.0.0.1:{}/{name}", cluster.port)
}

/// `sputnik` (full text only) on the PostgreSQL store at `url`, with `data` for its own indexes.
fn on_postgres(data: &Path, url: &str) -> Command {
    let mut command = sputnik(data);
    command.env("SPUTNIK_STORE__BACKEND", "postgres").env("SPUTNIK_STORE__URL", url);
    command
}

fn top_source(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{}", stderr(output));
    json(output)["hits"][0]["source"].as_str().unwrap().to_owned()
}

#[test]
fn an_embedded_store_moves_into_postgres_and_serves_from_there() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let anna = invite(&data, "Anna", &[]);
    let url = fresh_database();

    let copied = run(sputnik(&data).args(["copy-store", "--json", "--to", &url]));
    assert!(copied.status.success(), "{}", stderr(&copied));
    let copied = json(&copied);
    let stats = json(&run(sputnik(&data).args(["stats", "--json"])));
    assert_eq!(copied["documents"], stats["documents"], "{copied}");
    assert_eq!(copied["chunks"], stats["chunks"], "{copied}");
    assert_eq!(copied["employees"], 1, "{copied}");
    assert!(!copied.to_string().contains("password"), "{copied}");
    // A second copy would mix two stores: refused, and the first stays as it was.
    let again = run(sputnik(&data).args(["copy-store", "--to", &url]));
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(stderr(&again).contains("already holds records"), "{}", stderr(&again));

    // A replica with an empty data directory builds its index from the store and finds what the
    // embedded knowledge base found.
    let replica = tmp.path().join("replica");
    let question = ["search", "--json", "How", "do", "I", "get", "a", "laptop?"];
    assert_eq!(
        top_source(&run(on_postgres(&replica, &url).args(question))),
        top_source(&run(sputnik(&data).args(question)))
    );
    let extra = tmp.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(
        extra.join("parking.md"),
        "# Parking\n\nThe garage under building B has 40 places for bicycles.\n",
    )
    .unwrap();
    assert!(run(on_postgres(&replica, &url).arg("import").arg(&extra)).status.success());
    let found = run(on_postgres(&replica, &url).args(["search", "--json", "bicycles", "garage"]));
    assert_eq!(top_source(&found), "parking.md");

    // Served from PostgreSQL: the invite made before the move still joins, questions are
    // answered and logged there.
    let server = Server::start();
    let bot = serve_with(on_postgres(&replica, &url), &server, &[]);
    join(&server, 1001, &anna);
    server.text(1001, "en", "How do I get a laptop?");
    let answer = server.wait_for(1001, 2)[1]["text"].as_str().unwrap().to_owned();
    assert!(answer.contains("en/it-equipment.md"), "{answer}");
    stop(bot);

    // And the whole store comes back out into a redb file, question log included.
    let back = tmp.path().join("back.redb");
    let out = run(on_postgres(&replica, &url).args(["copy-store", "--json", "--to"]).arg(&back));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = json(&out);
    assert_eq!((out["questions"].as_u64(), out["employees"].as_u64()), (Some(1), Some(1)), "{out}");
    assert_eq!(out["documents"].as_u64(), stats["documents"].as_u64().map(|d| d + 1), "{out}");
}

/// `backup` and `restore` work on a PostgreSQL store as on the embedded one: a backup is a redb
/// file of one snapshot, and a restore goes into an empty database only.
#[test]
fn backup_and_restore_on_a_postgres_store() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let url = fresh_database();
    assert!(run(sputnik(&data).args(["copy-store", "--to", &url])).status.success());
    let replica = tmp.path().join("replica");
    let file = tmp.path().join("kb.redb");
    let taken = run(on_postgres(&replica, &url).args(["backup", "--json"]).arg(&file));
    assert!(taken.status.success(), "{}", stderr(&taken));
    let documents = json(&taken)["documents"].as_u64().unwrap();
    assert!(documents > 20 && file.is_file());

    let refused = run(on_postgres(&replica, &url).args(["restore"]).arg(&file));
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("already holds records"), "{}", stderr(&refused));

    let other = fresh_database();
    let second = tmp.path().join("second");
    let restored = run(on_postgres(&second, &other).args(["restore", "--json"]).arg(&file));
    assert!(restored.status.success(), "{}", stderr(&restored));
    assert_eq!(json(&restored)["restored"]["documents"].as_u64(), Some(documents));
    let question = ["search", "--json", "How", "do", "I", "get", "a", "laptop?"];
    assert_eq!(top_source(&run(on_postgres(&second, &other).args(question))), "en/it-equipment.md");
}
