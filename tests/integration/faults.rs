//! Telegram misbehaving in every way a network allows — 429 with retry_after, 5xx, requests
//! that never get an answer (client timeouts), connections dropped before and after Telegram
//! took a message, dropped and stalled long polls — while employees join and ask, the schedule
//! sends onboarding messages and a broadcast goes out.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::fake_bot::*;

const NEW_HIRES: i64 = 10;
const OTHERS: i64 = 10;

/// Questions in two groups with different answers; each employee asks one of each.
const FIRST: [&str; 3] =
    ["How do I get a laptop?", "How do I book a meeting room?", "How do I connect to the VPN from home?"];
const SECOND: [&str; 3] = [
    "How many days of paternity leave do fathers get?",
    "How do I submit my travel expenses?",
    "Can I work remotely from another country?",
];

struct Faults {
    throttle: u32,
    fail: u32,
    stall: u32,
    drop: u32,
    lose: u32,
    drop_polls: u32,
    stall_polls: u32,
}

impl Faults {
    fn inject(&self, server: &Server) {
        let fake = &server.fake;
        fake.throttle_sends.store(self.throttle, Ordering::SeqCst);
        fake.fail_sends.store(self.fail, Ordering::SeqCst);
        fake.stall_sends.store(self.stall, Ordering::SeqCst);
        fake.drop_sends.store(self.drop, Ordering::SeqCst);
        fake.lose_answers.store(self.lose, Ordering::SeqCst);
        fake.drop_polls.store(self.drop_polls, Ordering::SeqCst);
        fake.stall_polls.store(self.stall_polls, Ordering::SeqCst);
    }

    /// Every injected fault happened (none is left waiting for traffic).
    fn assert_spent(server: &Server, phase: &str) {
        let fake = &server.fake;
        let left = [
            &fake.throttle_sends,
            &fake.fail_sends,
            &fake.stall_sends,
            &fake.drop_sends,
            &fake.lose_answers,
            &fake.drop_polls,
            &fake.stall_polls,
        ]
        .map(|c| c.load(Ordering::SeqCst));
        assert_eq!(left, [0; 7], "faults not reached during {phase}");
    }
}

fn chat(i: i64) -> i64 {
    8000 + i
}

/// Waits until every chat in `chats` has `count` distinct messages.
fn wait_distinct(server: &Server, chats: impl Iterator<Item = i64> + Clone, count: usize, phase: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let short: Vec<(i64, usize)> =
            chats.clone().map(|c| (c, distinct_texts(server, c).len())).filter(|&(_, n)| n < count).collect();
        if short.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{phase}: chats short of {count} messages: {short:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn distinct_texts(server: &Server, chat: i64) -> Vec<String> {
    let mut texts = texts_to(server, chat);
    texts.sort();
    texts.dedup();
    texts
}

/// No reply is lost and none is doubled, except that a message Telegram took whose answer was
/// lost on the way back is sent again (the bot cannot tell it arrived): exactly those, once more.
#[test]
fn telegram_faults_lose_no_reply_and_double_only_what_telegram_took_unanswered() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base_with_plan(tmp.path());
    // New hires starting on Monday get the engineering plan when they join; the others are staff.
    let codes: Vec<String> = (0..NEW_HIRES + OTHERS)
        .map(|i| {
            if i < NEW_HIRES {
                invite_to(&data, &format!("Hire {i}"), "Engineering", Some("2026-11-30"))
            } else {
                invite_to(&data, &format!("Staff {i}"), "Sales", None)
            }
        })
        .collect();
    let everyone = (0..NEW_HIRES + OTHERS).map(chat);

    // Sunday evening in Moscow: nothing is scheduled yet.
    let now = Arc::new(AtomicI64::new(at("2026-11-29T17:00:00Z")));
    let server = Server::start();
    let port = free_port();
    let bot = InProcess::start_with(&data, &server, now.clone(), |settings| {
        settings.telegram.request_timeout_seconds = 4;
        settings.http.listen = format!("127.0.0.1:{port}");
    });

    // Joining.
    Faults { throttle: 2, fail: 2, stall: 2, drop: 3, lose: 2, drop_polls: 2, stall_polls: 1 }
        .inject(&server);
    for (i, code) in codes.iter().enumerate() {
        server.text(chat(i as i64), "en", &format!("/start {code}"));
    }
    wait_distinct(&server, everyone.clone(), 1, "joining");
    Faults::assert_spent(&server, "joining");

    // Questions: two each.
    Faults { throttle: 2, fail: 3, stall: 2, drop: 4, lose: 3, drop_polls: 2, stall_polls: 1 }
        .inject(&server);
    for i in 0..NEW_HIRES + OTHERS {
        server.text(chat(i), "en", FIRST[i as usize % 3]);
    }
    for i in 0..NEW_HIRES + OTHERS {
        server.text(chat(i), "en", SECOND[i as usize % 3]);
    }
    wait_distinct(&server, everyone.clone(), 3, "questions");
    Faults::assert_spent(&server, "questions");

    // Monday 09:30 in Moscow: day-one messages and reminders to the new hires.
    Faults { throttle: 1, fail: 2, stall: 2, drop: 3, lose: 2, drop_polls: 0, stall_polls: 0 }
        .inject(&server);
    now.store(at("2026-11-30T06:30:00Z"), Ordering::SeqCst);
    wait_distinct(&server, (0..NEW_HIRES).map(chat), 5, "reminders");
    Faults::assert_spent(&server, "reminders");

    // A broadcast to everyone, queued through the running service.
    Faults { throttle: 1, fail: 2, stall: 2, drop: 3, lose: 2, drop_polls: 0, stall_polls: 0 }
        .inject(&server);
    let queued = run(sputnik(&data).env("SPUTNIK_HTTP_LISTEN", format!("127.0.0.1:{port}")).args([
        "broadcast",
        "--json",
        "The office is closed on Friday.",
    ]));
    assert!(queued.status.success(), "{}", stderr(&queued));
    let queued = json(&queued);
    assert_eq!(queued["queued"], NEW_HIRES + OTHERS);
    wait_distinct(&server, (0..NEW_HIRES).map(chat), 6, "broadcast");
    wait_distinct(&server, (NEW_HIRES..NEW_HIRES + OTHERS).map(chat), 4, "broadcast");
    Faults::assert_spent(&server, "broadcast");
    // Let any repeat that is still coming arrive before counting.
    std::thread::sleep(Duration::from_secs(3));
    bot.stop();

    // What each chat got: the distinct messages it should have, each once, plus exactly one more
    // copy of each message whose answer the fake lost after taking it.
    let lost: Vec<(i64, String)> = server
        .fake
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.method == "sendmessage-answer-lost")
        .map(|c| (c.body["chat_id"].as_i64().unwrap(), c.body["text"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(lost.len(), 9, "every lost answer was injected");
    let mut copies: HashMap<(i64, String), usize> = HashMap::new();
    for i in 0..NEW_HIRES + OTHERS {
        for text in texts_to(&server, chat(i)) {
            *copies.entry((chat(i), text)).or_default() += 1;
        }
    }
    let mut repeated: Vec<(i64, String)> = copies
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(key, n)| {
            assert_eq!(*n, 2, "{key:?}");
            key.clone()
        })
        .collect();
    repeated.sort();
    let mut expected_repeats = lost.clone();
    expected_repeats.sort();
    assert_eq!(repeated, expected_repeats, "only messages taken without an answer came twice");

    for i in 0..NEW_HIRES + OTHERS {
        let texts = distinct_texts(&server, chat(i));
        let count = |needle: &str| texts.iter().filter(|t| t.contains(needle)).count();
        let hire = i < NEW_HIRES;
        assert_eq!(texts.len(), if hire { 6 } else { 4 }, "chat {}: {texts:#?}", chat(i));
        assert_eq!(count("Welcome, <b>"), 1, "{texts:#?}");
        assert_eq!(count("The office is closed on Friday."), 1, "{texts:#?}");
        assert_eq!(count("Welcome to Polaris Systems"), usize::from(hire), "{texts:#?}");
        assert_eq!(count("Your onboarding tasks"), usize::from(hire), "{texts:#?}");
    }

    // Every question logged exactly once, though polls were dropped and stalled.
    {
        let app = open_app(&data);
        let mut asked: Vec<(u64, String)> =
            app.store().questions().unwrap().into_iter().map(|q| (q.employee.0, q.text)).collect();
        let total = asked.len();
        asked.sort();
        asked.dedup();
        assert_eq!((total, asked.len()), (40, 40), "{asked:#?}");
    }
    let status =
        json(&run(sputnik(&data).args(["broadcast", "--status", &queued["id"].to_string(), "--json"])));
    assert_eq!(
        (status["delivered"].as_i64(), status["refused"].as_i64(), status["queued"].as_i64()),
        (Some(NEW_HIRES + OTHERS), Some(0), Some(0))
    );
    let faults = |name: &str| server.calls(name).len();
    eprintln!(
        "faults injected: {} stalled sends, {} dropped sends, {} lost answers, {} dropped polls, {} stalled polls, {} 429s/5xx",
        faults("sendmessage-stalled"),
        faults("sendmessage-dropped"),
        faults("sendmessage-answer-lost"),
        faults("getupdates-dropped"),
        faults("getupdates-stalled"),
        faults("sendmessage-refused"),
    );
}
