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

/// Runs `sql` on the database at `url` with the cluster's psql; returns what it printed.
pub fn psql(url: &str, sql: &str) -> String {
    fresh_database();
    let bin = CLUSTER_BIN.get().expect("the cluster is running");
    let output = Command::new(bin.join("psql")).args(["-XAtq", url, "-c", sql]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

static CLUSTER_BIN: OnceLock<PathBuf> = OnceLock::new();

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
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [port, bin, _ca] = fields[..] else { panic!("tests/pg-cluster did not start a cluster") };
        let _ = CLUSTER_BIN.set(PathBuf::from(bin));
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
pub fn on_postgres(data: &Path, url: &str) -> Command {
    let mut command = sputnik(data);
    command.env("SPUTNIK_STORE__BACKEND", "postgres").env("SPUTNIK_STORE__URL", url);
    command
}

/// The handbook knowledge base with Anna invited, copied into a fresh database: (its
/// directory, Anna's invite code, the database URL).
pub fn moved_into_postgres() -> (tempfile::TempDir, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let anna = invite(&data, "Anna", &[]);
    let url = fresh_database();
    assert!(run(sputnik(&data).args(["copy-store", "--to", &url])).status.success());
    (tmp, anna, url)
}

/// A folder with one document the handbook does not have.
fn parking(dir: &Path) -> PathBuf {
    let extra = dir.join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    std::fs::write(
        extra.join("parking.md"),
        "# Parking\n\nThe garage under building B has 40 places for bicycles.\n",
    )
    .unwrap();
    extra
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
    let extra = parking(tmp.path());
    assert!(run(on_postgres(&replica, &url).arg("import").arg(&extra)).status.success());
    let found = run(on_postgres(&replica, &url).args(["search", "--json", "bicycles", "garage"]));
    assert_eq!(top_source(&found), "parking.md");
    // What another replica imports meanwhile is caught up from the change log when this one
    // opens again, not by rebuilding its index from the whole store.
    let canteen = tmp.path().join("canteen");
    std::fs::create_dir_all(&canteen).unwrap();
    std::fs::write(canteen.join("canteen.md"), "# Canteen\n\nThe canteen serves borscht on Thursdays.\n")
        .unwrap();
    assert!(run(on_postgres(&tmp.path().join("other"), &url).arg("import").arg(&canteen)).status.success());
    let found = run(on_postgres(&replica, &url).args(["search", "--json", "borscht", "canteen"]));
    assert_eq!(top_source(&found), "canteen.md");
    assert!(!stderr(&found).contains("rebuilding"), "{}", stderr(&found));

    // Served from PostgreSQL: the invite made before the move still joins, questions are
    // answered and logged there.
    let server = Server::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let bot = serve_with(on_postgres(&replica, &url), &server, &[("SPUTNIK_HTTP_LISTEN", &listen)]);
    join(&server, 1001, &anna);
    server.text(1001, "en", "How do I get a laptop?");
    let answer = server.wait_for(1001, 2)[1]["text"].as_str().unwrap().to_owned();
    assert!(answer.contains("en/it-equipment.md"), "{answer}");
    // Admin commands on the serving replica's data directory go through its API, as they do on
    // the embedded store: the service holds the directory.
    let served =
        run(on_postgres(&replica, &url).env("SPUTNIK_HTTP_LISTEN", &listen).args(["stats", "--json"]));
    assert!(served.status.success(), "{}", stderr(&served));
    assert_eq!(json(&served)["documents"].as_u64(), copied["documents"].as_u64().map(|d| d + 2));
    let refused = run(on_postgres(&replica, &url).env("SPUTNIK_HTTP_LISTEN", "").args(["docs", "list"]));
    assert!(stderr(&refused).contains("stop the service"), "{}", stderr(&refused));
    stop(bot);

    // And the whole store comes back out into a redb file, question log included.
    let back = tmp.path().join("back.redb");
    let out = run(on_postgres(&replica, &url).args(["copy-store", "--json", "--to"]).arg(&back));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = json(&out);
    assert_eq!((out["questions"].as_u64(), out["employees"].as_u64()), (Some(1), Some(1)), "{out}");
    assert_eq!(out["documents"].as_u64(), stats["documents"].as_u64().map(|d| d + 2), "{out}");
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

/// Two replicas on one PostgreSQL store in long-polling mode: one serves Telegram, the other
/// stands by. Killed, the serving one hands over within seconds; the stand-by brings its index
/// up to what was imported meanwhile, and no question is lost or answered twice.
#[test]
fn a_stand_by_replica_takes_over_when_the_serving_one_dies() {
    let (tmp, anna, url) = moved_into_postgres();
    let server = Server::start();
    let first = serve_with(on_postgres(&tmp.path().join("first"), &url), &server, &[]);
    join(&server, 1001, &anna);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let second = serve_with(
        on_postgres(&tmp.path().join("second"), &url),
        &server,
        &[("SPUTNIK_HTTP_LISTEN", &listen)],
    );
    server.text(1001, "en", "How do I get a laptop?");
    assert!(server.wait_for(1001, 2)[1]["text"].as_str().unwrap().contains("en/it-equipment.md"));
    // The stand-by is alive, and says it is not the one serving.
    assert_eq!(http_get(port, "/livez").0, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, body) = http_get(port, "/readyz");
        if body.contains("standing by") {
            assert_eq!(status, 503, "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {body}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // Imported through a third process while the first serves and the second stands by.
    let extra = parking(tmp.path());
    assert!(run(on_postgres(&tmp.path().join("admin"), &url).arg("import").arg(&extra)).status.success());

    drop(first); // SIGKILL
    let killed = std::time::Instant::now();
    server.text(1001, "en", "Where can I leave my bicycle in the garage?");
    let answers = server.wait_for(1001, 3);
    assert!(killed.elapsed() < std::time::Duration::from_secs(10), "took over in {:?}", killed.elapsed());
    let answer = answers[2]["text"].as_str().unwrap();
    assert!(answer.contains("parking.md"), "{answer}");
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(server.sent_to(1001).len(), 3, "nothing answered twice: {:#?}", server.sent_to(1001));
    let log = stop(second);
    assert!(log.contains("standing by") && log.contains("taking over"), "{log}");
}

/// The serving replica checks every second that it still holds its turn; when the database
/// drops its session (a network cut, a restart) it stops with an error rather than serve beside
/// the stand-by that takes over.
#[test]
fn a_replica_that_loses_its_turn_stops_and_the_stand_by_serves() {
    let (tmp, anna, url) = moved_into_postgres();
    let server = Server::start();
    let mut first = serve_with(on_postgres(&tmp.path().join("first"), &url), &server, &[]);
    join(&server, 1001, &anna);
    let second = serve_with(on_postgres(&tmp.path().join("second"), &url), &server, &[]);

    // The service lock is advisory lock 0x53707574_6e696b32: objid holds its low half.
    let ended = psql(
        &url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND objid = 1852402482 AND objsubid = 1 \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    );
    assert_eq!(ended, "1");
    let child = first.0.as_mut().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "the replica kept serving without its turn");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1));
    let log = first.1.take().unwrap().join().unwrap();
    assert!(log.contains("lost its turn to serve Telegram"), "{log}");

    server.text(1001, "en", "How do I get a laptop?");
    assert!(server.wait_for(1001, 2)[1]["text"].as_str().unwrap().contains("en/it-equipment.md"));
    stop(second);
}

/// Every replica follows the store: a document imported through any process is found by each
/// within 2 s, and an employee deactivated through one is refused by the one serving.
#[test]
fn replicas_follow_what_any_of_them_writes() {
    let (tmp, anna, url) = moved_into_postgres();
    let server = Server::start();
    let token = "replica-admin-token";
    let ports = [free_port(), free_port()];
    let replicas: Vec<Running> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let listen = format!("127.0.0.1:{port}");
            let env = [("SPUTNIK_HTTP_LISTEN", listen.as_str()), ("SPUTNIK_HTTP__ADMIN_TOKEN", token)];
            serve_with(on_postgres(&tmp.path().join(format!("replica-{i}")), &url), &server, &env)
        })
        .collect();
    join(&server, 1001, &anna);
    let indexed = |port: u16| {
        let (status, body) = http(port, "GET", "/api/stats", Some(token), b"");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["indexed_chunks"].as_u64().unwrap()
    };
    let before = ports.map(indexed);

    let extra = parking(tmp.path());
    assert!(run(on_postgres(&tmp.path().join("admin"), &url).arg("import").arg(&extra)).status.success());
    let imported = std::time::Instant::now();
    for (port, before) in ports.into_iter().zip(before) {
        while indexed(port) == before {
            assert!(
                imported.elapsed() < std::time::Duration::from_secs(2),
                "replica on {port} did not follow"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    let deactivated = run(on_postgres(&tmp.path().join("admin"), &url).args(["users", "deactivate", "1"]));
    assert!(deactivated.status.success(), "{}", stderr(&deactivated));
    server.text(1001, "en", "Where can I leave my bicycle in the garage?");
    let reply = server.wait_for(1001, 2)[1]["text"].as_str().unwrap().to_owned();
    assert!(reply.contains("access to the assistant is switched off"), "{reply}");
    for replica in replicas {
        stop(replica);
    }
}
