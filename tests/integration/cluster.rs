//! Several replicas on one PostgreSQL store in webhook mode, behind a load balancer: every
//! replica answers, one sends; replicas die and restart under load, and every question is
//! answered exactly once.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::balancer::Balancer;
use crate::fake_bot::*;
use crate::postgres::{moved_into_postgres, on_postgres};

const SECRET: &str = "cluster-webhook-secret_1";

/// `sputnik serve` in webhook mode, listening on `port`, posted to through `balancer`.
fn replica(data: &std::path::Path, url: &str, server: &Server, balancer: &Balancer, port: u16) -> Running {
    let command: Command = on_postgres(data, url);
    let hook = format!("http://{}/telegram", balancer.address);
    let listen = format!("127.0.0.1:{port}");
    serve_with(
        command,
        server,
        &[
            ("SPUTNIK_TELEGRAM__MODE", "webhook"),
            ("SPUTNIK_TELEGRAM__WEBHOOK_URL", &hook),
            ("SPUTNIK_TELEGRAM__WEBHOOK_LISTEN", &listen),
            ("SPUTNIK_TELEGRAM__WEBHOOK_SECRET", SECRET),
            ("SPUTNIK_TELEGRAM__WEBHOOK_TAKEOVER_SECONDS", "2"),
        ],
    )
}

/// Waits until each chat has its count of messages; then, after a pause for late doubles,
/// checks that none has more.
fn every_chat_gets_exactly(server: &Server, expected: &[(i64, usize)]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for &(user, count) in expected {
        while server.sent_to(user).len() < count {
            let got = server.sent_to(user).len();
            assert!(Instant::now() < deadline, "chat {user}: {got} of {count} messages");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    for &(user, count) in expected {
        assert_eq!(server.sent_to(user).len(), count, "chat {user} got a reply twice");
    }
}

#[test]
fn webhook_replicas_behind_a_load_balancer_answer_each_question_once_through_deaths_and_restarts() {
    let (tmp, _, url) = moved_into_postgres();
    let users: Vec<i64> = (0..40).map(|i| 7000 + i).collect();
    {
        let mut settings = sputnik::config::Settings::lexical_only(tmp.path().join("setup"));
        settings.store.backend = sputnik::config::StoreBackend::Postgres;
        settings.store.url = sputnik::config::Secret::new(url.as_str());
        let app = sputnik::App::open(settings).unwrap();
        for (i, user) in users.iter().enumerate() {
            invite_in_store(
                &app,
                &format!("Employee {i}"),
                "Sales",
                Some(*user),
                jiff::Timestamp::now().as_second(),
            );
        }
    }
    let server = Server::start();
    let ports = [free_port(), free_port(), free_port()];
    let balancer = Balancer::start(ports.to_vec());
    let data = |i: usize| tmp.path().join(format!("replica-{i}"));
    // The first to start leads: it points Telegram at the webhook.
    let mut replicas = vec![replica(&data(0), &url, &server, &balancer, ports[0])];
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.calls("setWebhook").is_empty() {
        if Instant::now() > deadline {
            let (_, log) = terminate(replicas.remove(0));
            panic!("no replica set the webhook:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.calls("setWebhook")[0]["secret_token"], SECRET);
    replicas.push(replica(&data(1), &url, &server, &balancer, ports[1]));
    replicas.push(replica(&data(2), &url, &server, &balancer, ports[2]));

    let questions = ["How do I get a laptop?", "How many vacation days do I have?", "Where is the office?"];
    let mut asked = 0;
    for (round, question) in questions.iter().enumerate() {
        for &user in &users {
            server.text(user, "en", question);
        }
        asked += 1;
        if round == 1 {
            // A replica that is not the leader dies mid-load: what it received and did not
            // answer is taken over, what was being posted to it goes to the others.
            drop(replicas.remove(1));
        }
    }
    every_chat_gets_exactly(&server, &users.iter().map(|&u| (u, asked)).collect::<Vec<_>>());
    let per_update: Vec<u32> = server.fake.posts.lock().unwrap().values().copied().collect();
    assert!(per_update.iter().all(|&posts| posts >= 1));

    // A rolling restart of all three, the leader among them, while employees keep asking.
    replicas.insert(1, replica(&data(1), &url, &server, &balancer, ports[1]));
    for i in 0..3 {
        let stopped = std::mem::replace(&mut replicas[i], Running(None));
        stop(stopped);
        for &user in users.iter().skip(i * 10).take(10) {
            server.text(user, "en", "How do I get a laptop?");
        }
        replicas[i] = replica(&data(i), &url, &server, &balancer, ports[i]);
    }
    let mut expected: Vec<(i64, usize)> = users.iter().map(|&u| (u, asked)).collect();
    for (n, (_, count)) in expected.iter_mut().enumerate() {
        if n < 30 {
            *count += 1;
        }
    }
    every_chat_gets_exactly(&server, &expected);
    assert!(server.calls("setWebhook").len() >= 2, "a new leader set the webhook when the first stopped");
    for replica in replicas {
        stop(replica);
    }
}
