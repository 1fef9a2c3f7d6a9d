//! The cluster under load (issue 21): questions per second and the time from update to answer
//! with one, two and three replicas on one PostgreSQL, in webhook mode behind a load balancer,
//! with the default model. Figures go to docs/benchmarks.md; run with
//! `cargo test --release --test integration cluster_load_ -- --ignored --nocapture`.

use std::time::{Duration, Instant};

use crate::balancer::Balancer;
use crate::cluster::replica;
use crate::common::*;
use crate::fake_bot::*;
use crate::postgres::fresh_database;

const EMPLOYEES: i64 = 1000;
/// Questions each employee asks at once in the backlog run.
const BACKLOG: usize = 3;
/// The steady run: questions a second, and for how long.
const RATE: u64 = 40;
const STEADY: Duration = Duration::from_secs(15);

/// Times from asking to the answer, in the order asked per chat; `asked` is (chat, when).
/// Each chat's answers after the first `skip` messages pair with its questions in order.
fn latencies(
    server: &Server,
    asked: &[(i64, Instant)],
    skip: &std::collections::HashMap<i64, usize>,
) -> Vec<Duration> {
    let calls = server.fake.calls.lock().unwrap().clone();
    let mut answers: std::collections::HashMap<i64, Vec<Instant>> = std::collections::HashMap::new();
    for call in calls.iter().filter(|c| c.method == "sendmessage") {
        answers.entry(call.body["chat_id"].as_i64().unwrap()).or_default().push(call.at);
    }
    let mut next: std::collections::HashMap<i64, usize> = skip.clone();
    let mut out: Vec<Duration> = asked
        .iter()
        .map(|(chat, at)| {
            let n = next.entry(*chat).or_default();
            let answered = answers[chat][*n];
            *n += 1;
            answered.duration_since(*at)
        })
        .collect();
    out.sort();
    out
}

/// CPU time so far, in clock ticks: the whole machine's busy time, the replicas' (`pids`),
/// PostgreSQL's server processes' and this process's (the fake Telegram and the load balancer).
fn cpu(pids: &[u32]) -> [u64; 4] {
    let ticks = |pid: &str| -> Option<(String, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (head, rest) = stat.rsplit_once(')')?;
        let comm = head.split_once('(')?.1.to_owned();
        let fields: Vec<u64> =
            rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
        Some((comm, fields.iter().sum()))
    };
    let line = std::fs::read_to_string("/proc/stat").unwrap();
    let all: Vec<u64> =
        line.lines().next().unwrap().split_whitespace().skip(1).map(|f| f.parse().unwrap()).collect();
    let busy = all.iter().sum::<u64>() - all[3] - all[4];
    let replicas = pids.iter().filter_map(|pid| ticks(&pid.to_string())).map(|(_, t)| t).sum();
    let postgres = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| ticks(entry.ok()?.file_name().to_str()?))
        .filter(|(comm, _)| comm == "postgres")
        .map(|(_, t)| t)
        .sum();
    [busy, replicas, postgres, ticks("self").unwrap().1]
}

fn at(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// Messages sent so far (counted in place: the fake's record is shared with its handlers).
fn answered_count(server: &Server) -> usize {
    server.fake.calls.lock().unwrap().iter().filter(|c| c.method == "sendmessage").count()
}

fn wait_answered(server: &Server, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while answered_count(server) < count {
        assert!(Instant::now() < deadline, "{} of {count} answered", answered_count(server));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "a load run of several minutes; figures go to docs/benchmarks.md"]
fn cluster_load_1000_employees_on_1_2_and_3_replicas() {
    let tmp = tempfile::tempdir().unwrap();
    let data = handbook_with_model(tmp.path());
    {
        let app = sputnik::App::open(model_settings(&data)).unwrap();
        let now = jiff::Timestamp::now().as_second();
        for i in 0..EMPLOYEES {
            invite_in_store(&app, &format!("Employee {i}"), "Load", Some(10_000 + i), now);
        }
    }
    let questions = handbook_questions();
    let question = |n: usize| &questions[n % questions.len()];
    for count in 1..=3usize {
        let url = fresh_database();
        assert!(run(sputnik(&data).args(["copy-store", "--to", &url])).status.success());
        let server = Server::start();
        let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let balancer = Balancer::start(ports.clone());
        let unthrottled = [
            ("SPUTNIK_TELEGRAM__PER_CHAT_INTERVAL_MS", "1"),
            ("SPUTNIK_TELEGRAM__MESSAGES_PER_SECOND", "10000"),
        ];
        let replicas: Vec<Running> = (0..count)
            .map(|i| {
                let mut command = sputnik_with_model(&tmp.path().join(format!("replica-{count}-{i}")));
                command.env("SPUTNIK_STORE__BACKEND", "postgres").env("SPUTNIK_STORE__URL", &url);
                replica(command, &server, &balancer, ports[i], &unthrottled)
            })
            .collect();
        while server.calls("setWebhook").is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }

        // Every employee asks at once: how fast the cluster works through a backlog.
        let pids: Vec<u32> = replicas.iter().map(|r| r.0.as_ref().unwrap().id()).collect();
        let cpu_before = cpu(&pids);
        let started = Instant::now();
        let mut asked = Vec::new();
        for round in 0..BACKLOG {
            for i in 0..EMPLOYEES {
                let (query, lang) = question(i as usize * BACKLOG + round);
                server.text(10_000 + i, lang, query);
                asked.push((10_000 + i, Instant::now()));
            }
        }
        wait_answered(&server, asked.len());
        let elapsed = started.elapsed();
        let cpu_after = cpu(&pids);
        // Clock ticks are hundredths of a second on Linux; two cores give 200 a second.
        let [busy, in_replicas, in_postgres, in_harness] =
            [0, 1, 2, 3].map(|i| (cpu_after[i] - cpu_before[i]) as f64 / 100.0 / elapsed.as_secs_f64());
        println!(
            "cluster_load: {count} replica(s), backlog: CPU busy {busy:.2} cores of {}: replicas {in_replicas:.2}, PostgreSQL {in_postgres:.2}, the fake Telegram and the balancer {in_harness:.2}",
            std::thread::available_parallelism().unwrap()
        );
        let backlog = latencies(&server, &asked, &Default::default());
        println!(
            "cluster_load: {count} replica(s), backlog of {} questions: {:.1} s = {:.0} questions/s; update→answer p50 {:?}, p95 {:?}",
            asked.len(),
            elapsed.as_secs_f64(),
            asked.len() as f64 / elapsed.as_secs_f64(),
            at(&backlog, 0.5),
            at(&backlog, 0.95)
        );

        // A steady rate well within what one replica manages: the time one question takes.
        let before: std::collections::HashMap<i64, usize> =
            (0..EMPLOYEES).map(|i| (10_000 + i, BACKLOG)).collect();
        let mut asked = Vec::new();
        let started = Instant::now();
        let total = RATE * STEADY.as_secs();
        for n in 0..total {
            let due = started + Duration::from_millis(n * 1000 / RATE);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let chat = 10_000 + (n as i64 * 7) % EMPLOYEES;
            let (query, lang) = question(n as usize + 11);
            server.text(chat, lang, query);
            asked.push((chat, Instant::now()));
        }
        wait_answered(&server, EMPLOYEES as usize * BACKLOG + asked.len());
        let steady = latencies(&server, &asked, &before);
        println!(
            "cluster_load: {count} replica(s), {RATE} questions/s for {} s: update→answer p50 {:?}, p95 {:?}, p99 {:?}",
            STEADY.as_secs(),
            at(&steady, 0.5),
            at(&steady, 0.95),
            at(&steady, 0.99)
        );
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(answered_count(&server), EMPLOYEES as usize * BACKLOG + asked.len(), "each answered once");
        for replica in replicas {
            stop(replica);
        }
    }
}
