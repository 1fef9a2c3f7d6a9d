//! Soak: 1,000 employees asking at a steady rate through the fake Bot API for a fixed time
//! (SPUTNIK_SOAK_SECONDS, 60 by default so CI runs it; the figures in docs/reliability.md come
//! from a 600-second run). Every question is answered exactly once, the service's memory shows
//! no growth trend once warm, and the latency percentiles are printed. "Warm" means each distinct
//! question has been asked once before the clock starts: the first asking of a question runs the
//! model, the rest come from the cache, and on a machine busy with other work (CI runs the
//! other tests beside this one) the cold start alone can queue questions for seconds, which
//! says nothing about the steady state this test is for.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::fake_bot::*;

const EMPLOYEES: i64 = 1000;
const FIRST_CHAT: i64 = 20_000;
/// Questions per second, all employees together (each asks about every 50 s).
const RATE: u64 = 20;
/// Chats of the employees who ask each distinct question once before the timed run.
const FIRST_WARMUP_CHAT: i64 = FIRST_CHAT + EMPLOYEES;

/// The resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn soak_1000_employees_at_a_steady_rate() {
    let seconds: u64 = std::env::var("SPUTNIK_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let tmp = tempfile::tempdir().unwrap();
    let data = handbook_with_model(tmp.path());
    {
        let app = sputnik::App::open(model_settings(&data)).unwrap();
        let now = jiff::Timestamp::now().as_second();
        for i in 0..EMPLOYEES {
            invite_in_store(&app, &format!("Employee {i}"), "Soak", Some(FIRST_CHAT + i), now);
        }
        for i in 0..handbook_questions().len() as i64 {
            invite_in_store(&app, &format!("Warm-up {i}"), "Soak", Some(FIRST_WARMUP_CHAT + i), now);
        }
    }
    let questions = handbook_questions();
    let server = Server::start();
    let bot = serve_with(sputnik_with_model(&data), &server, &[]);
    let pid = bot.0.as_ref().unwrap().id();

    // Warm-up: every distinct question once, each from its own employee (no rate limit), all
    // answered before the timed run.
    for (i, (query, lang)) in questions.iter().enumerate() {
        server.text(FIRST_WARMUP_CHAT + i as i64, lang, query);
    }
    let warmed = questions.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    while server.calls("sendMessage").len() < warmed {
        assert!(
            Instant::now() < deadline,
            "warm-up: {} of {warmed} answered",
            server.calls("sendMessage").len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A question every 1/RATE s, employees in turn; memory sampled every second.
    let started = Instant::now();
    let interval = Duration::from_micros(1_000_000 / RATE);
    let mut asked: Vec<Vec<Instant>> = vec![Vec::new(); EMPLOYEES as usize];
    let mut memory: Vec<(f64, u64)> = Vec::new();
    let mut next_sample = started;
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(seconds) {
        let due = started + interval * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let employee = (n % EMPLOYEES as u64) as usize;
        let (query, lang) = &questions[(n as usize * 7) % questions.len()];
        server.text(FIRST_CHAT + employee as i64, lang, query);
        asked[employee].push(Instant::now());
        n += 1;
        if Instant::now() >= next_sample {
            memory.push((started.elapsed().as_secs_f64(), rss_kib(pid)));
            next_sample += Duration::from_secs(1);
        }
    }
    let total = n as usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.calls("sendMessage").len() < warmed + total {
        let answered = server.calls("sendMessage").len() - warmed;
        assert!(Instant::now() < deadline, "{answered} of {total} answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (code, log) = terminate(bot);
    assert_eq!(code, Some(0), "{log}");

    // Every question answered exactly once, in order per employee.
    let calls = server.fake.calls.lock().unwrap().clone();
    let mut answers: Vec<Vec<Instant>> = vec![Vec::new(); EMPLOYEES as usize];
    for call in calls.iter().filter(|c| c.method == "sendmessage") {
        let chat = call.body["chat_id"].as_i64().unwrap();
        if chat < FIRST_WARMUP_CHAT {
            answers[(chat - FIRST_CHAT) as usize].push(call.at);
        }
    }
    let mut latencies = Vec::new();
    for (i, (sent, got)) in asked.iter().zip(&answers).enumerate() {
        assert_eq!(got.len(), sent.len(), "employee {i}: {} questions, {} answers", sent.len(), got.len());
        latencies.extend(got.iter().zip(sent).map(|(a, s)| a.duration_since(*s)));
    }
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];

    // Memory: after the first fifth (warm-up: caches, allocator pools), the last fifth's mean
    // stays within a quarter (plus 16 MiB) of the second fifth's.
    let fifth = |k: usize| {
        let len = memory.len();
        let part = &memory[len * k / 5..len * (k + 1) / 5];
        part.iter().map(|(_, kib)| *kib as f64).sum::<f64>() / part.len().max(1) as f64 / 1024.0
    };
    let (early, late) = (fifth(1), fifth(4));
    let peak = memory.iter().map(|(_, kib)| *kib).max().unwrap() as f64 / 1024.0;
    // Least-squares slope of RSS over the time after warm-up, in MiB per minute.
    let warm = &memory[memory.len() / 5..];
    let mean_t = warm.iter().map(|(t, _)| t).sum::<f64>() / warm.len() as f64;
    let mean_m = warm.iter().map(|(_, m)| *m as f64 / 1024.0).sum::<f64>() / warm.len() as f64;
    let slope = warm.iter().map(|(t, m)| (t - mean_t) * (*m as f64 / 1024.0 - mean_m)).sum::<f64>()
        / warm.iter().map(|(t, _)| (t - mean_t).powi(2)).sum::<f64>().max(1e-9)
        * 60.0;
    println!(
        "soak: {total} questions from {EMPLOYEES} employees in {seconds} s at {RATE}/s, all answered once; \
         update→answer p50 {:?}, p95 {:?}, p99 {:?}, max {:?}; RSS second fifth {early:.1} MiB, last fifth \
         {late:.1} MiB, peak {peak:.1} MiB, trend after warm-up {slope:+.2} MiB/min",
        at(0.5),
        at(0.95),
        at(0.99),
        latencies.last().unwrap(),
    );
    assert!(late <= early * 1.25 + 16.0, "memory grew: {early:.1} MiB → {late:.1} MiB ({memory:?})");
}
