//! Several replicas on one PostgreSQL store in webhook mode, behind a load balancer: every
//! replica answers, one sends; a thousand employees ask while replicas die and restart, and
//! every question is answered exactly once.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::balancer::Balancer;
use crate::fake_bot::*;
use crate::postgres::{moved_into_postgres, on_postgres, psql};

const SECRET: &str = "cluster-webhook-secret_1";

/// Waits until something listens on `port`: the replica has started (its signal handling too).
pub fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `sputnik serve` (`command`) in webhook mode, listening on `port`, posted to through
/// `balancer`; returns once it takes posts.
pub fn replica(
    command: Command,
    server: &Server,
    balancer: &Balancer,
    port: u16,
    extra: &[(&str, &str)],
) -> Running {
    let hook = format!("http://{}/telegram", balancer.address);
    let listen = format!("127.0.0.1:{port}");
    let running = serve_with(
        command,
        server,
        &[
            ("SPUTNIK_TELEGRAM__MODE", "webhook"),
            ("SPUTNIK_TELEGRAM__WEBHOOK_URL", &hook),
            ("SPUTNIK_TELEGRAM__WEBHOOK_LISTEN", &listen),
            ("SPUTNIK_TELEGRAM__WEBHOOK_SECRET", SECRET),
            ("SPUTNIK_TELEGRAM__WEBHOOK_TAKEOVER_SECONDS", "2"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
    );
    wait_listening(port);
    running
}

/// Messages sent so far, by chat.
fn sent_by_chat(server: &Server) -> HashMap<i64, usize> {
    let mut counts = HashMap::new();
    for call in server.fake.calls.lock().unwrap().iter().filter(|c| c.method == "sendmessage") {
        *counts.entry(call.body["chat_id"].as_i64().unwrap()).or_default() += 1;
    }
    counts
}

/// Waits until each chat has its count of messages; then, after a pause for late doubles,
/// checks that none has more.
fn every_chat_gets_exactly(server: &Server, expected: &HashMap<i64, usize>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sent = sent_by_chat(server);
        let short: Vec<(i64, usize, usize)> = expected
            .iter()
            .filter_map(|(chat, &want)| {
                let got = sent.get(chat).copied().unwrap_or(0);
                (got < want).then_some((*chat, got, want))
            })
            .collect();
        if short.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{} chats short of replies, e.g. {:?}", short.len(), &short[..1]);
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let sent = sent_by_chat(server);
    let doubled: Vec<(&i64, &usize)> = expected.iter().filter(|(chat, want)| sent[*chat] != **want).collect();
    assert!(doubled.is_empty(), "{} chats got a reply twice, e.g. {:?}", doubled.len(), doubled.first());
}

const EMPLOYEES: usize = 1000;

#[test]
fn a_thousand_employees_ask_webhook_replicas_behind_a_load_balancer_through_deaths_and_restarts() {
    let (tmp, _, url) = moved_into_postgres();
    let users: Vec<i64> = (0..EMPLOYEES as i64).map(|i| 70_000 + i).collect();
    {
        let mut settings = sputnik::config::Settings::lexical_only(tmp.path().join("setup"));
        settings.store.backend = sputnik::config::StoreBackend::Postgres;
        settings.store.url = sputnik::config::Secret::new(url.as_str());
        let app = sputnik::App::open(settings).unwrap();
        let now = jiff::Timestamp::now().as_second();
        for (i, user) in users.iter().enumerate() {
            invite_in_store(&app, &format!("Employee {i}"), "Sales", Some(*user), now);
        }
    }
    let server = Server::start();
    let ports = [free_port(), free_port(), free_port()];
    let balancer = Balancer::start(ports.to_vec());
    let data = |i: usize| tmp.path().join(format!("replica-{i}"));
    // The first to start leads: it points Telegram at the webhook.
    let mut replicas = vec![replica(on_postgres(&data(0), &url), &server, &balancer, ports[0], &[])];
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.calls("setWebhook").is_empty() {
        if Instant::now() > deadline {
            let (_, log) = terminate(replicas.remove(0));
            panic!("no replica set the webhook:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.calls("setWebhook")[0]["secret_token"], SECRET);
    replicas.push(replica(on_postgres(&data(1), &url), &server, &balancer, ports[1], &[]));
    replicas.push(replica(on_postgres(&data(2), &url), &server, &balancer, ports[2], &[]));

    let questions = ["How do I get a laptop?", "How many vacation days do I have?", "Where is the office?"];
    let mut expected: HashMap<i64, usize> = users.iter().map(|&u| (u, 0)).collect();
    for question in questions {
        for &user in &users {
            server.text(user, "en", question);
            *expected.get_mut(&user).unwrap() += 1;
        }
    }
    // A replica that is not the leader dies mid-load: what it received and did not answer is
    // taken over, what was being posted to it goes to the others.
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.calls("sendMessage").len() < EMPLOYEES {
        assert!(Instant::now() < deadline, "the replicas answer nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(replicas.remove(1));
    every_chat_gets_exactly(&server, &expected);
    let posts = server.fake.posts.lock().unwrap().clone();
    assert!(posts.values().all(|&posts| posts >= 1));

    // It comes back, then all three restart in turn, the leader among them, while employees
    // keep asking.
    replicas.insert(1, replica(on_postgres(&data(1), &url), &server, &balancer, ports[1], &[]));
    let third = EMPLOYEES / 3;
    for i in 0..3 {
        let stopped = std::mem::replace(&mut replicas[i], Running(None, None));
        stop(stopped);
        for &user in users.iter().skip(i * third).take(third) {
            server.text(user, "en", "How do I get a laptop?");
            *expected.get_mut(&user).unwrap() += 1;
        }
        replicas[i] = replica(on_postgres(&data(i), &url), &server, &balancer, ports[i], &[]);
    }
    every_chat_gets_exactly(&server, &expected);
    assert!(server.calls("setWebhook").len() >= 2, "a new leader set the webhook when the first stopped");
    // Every question is in the store's log once: none lost with a replica, none logged twice by
    // two replicas that both handled it.
    let asked: usize = expected.values().sum();
    let logged = psql(&url, "SELECT count(*) FROM sputnik_kv WHERE tbl = 'questions'");
    assert_eq!(logged, asked.to_string(), "questions in the store's log");
    for replica in replicas {
        stop(replica);
    }
}

/// Posts `body` to the webhook on `port` with `secret` (if any) in Telegram's header; the status.
fn post_update(port: u16, secret: Option<&str>, body: &str) -> u16 {
    let headers: Vec<(&str, &str)> = secret.iter().map(|s| ("X-Telegram-Bot-Api-Secret-Token", *s)).collect();
    http_with(port, "POST", "/telegram", &headers, body.as_bytes()).0
}

/// The webhook takes only posts with the secret that are updates, and an update posted twice
/// (Telegram repeating it) is answered once.
#[test]
fn a_webhook_post_needs_the_secret_and_a_repeated_update_is_answered_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let anna = invite(&data, "Anna", &[]);
    let server = Server::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let bot = serve_with(
        crate::common::sputnik(&data),
        &server,
        &[
            ("SPUTNIK_TELEGRAM__MODE", "webhook"),
            ("SPUTNIK_TELEGRAM__WEBHOOK_URL", "https://bot.example.com/telegram"),
            ("SPUTNIK_TELEGRAM__WEBHOOK_LISTEN", &listen),
            ("SPUTNIK_TELEGRAM__WEBHOOK_SECRET", SECRET),
        ],
    );
    let update = |id: i64, text: &str| {
        serde_json::json!({"update_id": id, "message": {
            "message_id": id, "date": 1_790_000_000,
            "chat": {"id": 1001, "type": "private", "first_name": "U"},
            "from": Server::user(1001, "en"), "text": text
        }})
        .to_string()
    };
    let join = update(1, &format!("/start {anna}"));
    wait_listening(port);
    assert_eq!(post_update(port, None, &join), 401);
    assert_eq!(post_update(port, Some("not-the-secret"), &join), 401);
    assert_eq!(post_update(port, Some(SECRET), "{\"not\": \"an update\"}"), 400);
    assert_eq!(post_update(port, Some(SECRET), &join), 200);
    assert!(server.wait_for(1001, 1)[0]["text"].as_str().unwrap().contains("Welcome"));
    let question = update(2, "How do I get a laptop?");
    assert_eq!(post_update(port, Some(SECRET), &question), 200);
    assert_eq!(post_update(port, Some(SECRET), &question), 200, "a repeat is acknowledged");
    assert!(server.wait_for(1001, 2)[1]["text"].as_str().unwrap().contains("en/it-equipment.md"));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(server.sent_to(1001).len(), 2, "the repeated update was answered once");
    assert_eq!(server.calls("setWebhook")[0]["url"], "https://bot.example.com/telegram");
    stop(bot);
}
