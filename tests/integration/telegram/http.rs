//! The service's HTTP side: health, metrics, the admin API and the dashboard.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;
use crate::fake_bot::*;

/// /livez, /readyz and /metrics answer next to the bot, and the metrics move as questions are
/// asked and rated.
#[test]
fn health_and_metrics_follow_the_questions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let code = invite(&data, "Anna", &[]);
    let server = Server::start();
    let port = free_port();
    let bot = serve_with(sputnik(&data), &server, &[("SPUTNIK_HTTP_LISTEN", &format!("127.0.0.1:{port}"))]);
    assert_eq!(http_get(port, "/livez"), (200, "ok\n".to_owned()));
    let (status, body) = wait_ready(port);
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready, json!({"store": "ok", "index": "ok", "model": "off", "telegram": "ok"}));

    let (_, before) = http_get(port, "/metrics");
    assert_eq!(metric(&before, "sputnik_questions_total{outcome=\"answered\"}"), 0.0);
    assert_eq!(metric(&before, "sputnik_index_size{what=\"documents\"}"), 22.0);
    join(&server, 1001, &code);
    server.text(1001, "en", "How do I book a meeting room?");
    server.text(1001, "en", "What is the airspeed of an unladen swallow?");
    let replies = server.wait_for(1001, 3);
    let answer = replies.iter().find(|m| m["text"].as_str().unwrap().contains("Google Calendar")).unwrap();
    let question =
        answer["reply_markup"]["inline_keyboard"][0][0]["callback_data"].as_str().unwrap().to_owned();
    server.press(1001, 5, &question);
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let (_, text) = http_get(port, "/metrics");
        if metric(&text, "sputnik_feedback_total{kind=\"helpful\"}") >= 1.0 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(metric(&after, "sputnik_questions_total{outcome=\"answered\"}"), 1.0);
    assert_eq!(metric(&after, "sputnik_questions_total{outcome=\"unanswered\"}"), 1.0);
    assert_eq!(metric(&after, "sputnik_feedback_total{kind=\"helpful\"}"), 1.0);
    for stage in ["lexical", "fuse", "compose"] {
        assert_eq!(
            metric(&after, &format!("sputnik_answer_stage_seconds_count{{stage=\"{stage}\"}}")),
            2.0,
            "{stage}"
        );
    }
    assert_eq!(metric(&after, "sputnik_answer_seconds_count"), 2.0);
    assert_eq!(metric(&after, "sputnik_outbox_depth"), 0.0);
    assert!(metric(&after, "sputnik_process_resident_memory_bytes") > 1e6);
    // Every series the shipped alert rules use exists.
    let rules = std::fs::read_to_string(repo_path("packaging/prometheus/sputnik-alerts.yml")).unwrap();
    let mut used: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("sputnik_"))
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 6, "{used:?}");
    for name in used {
        assert!(
            after.lines().any(|l| l.starts_with(name)),
            "the alert rules use {name}, which /metrics lacks"
        );
    }
    let (code, log) = terminate(bot);
    assert_eq!(code, Some(0), "{log}");
}

/// The admin API: every endpoint answers with the token; without it, or with a wrong one, 401
/// and nothing else; oversized bodies are refused.
#[test]
fn the_admin_api_needs_its_token_and_limits_bodies() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let server = Server::start();
    let port = free_port();
    let bot = serve_with(
        sputnik(&data),
        &server,
        &[
            ("SPUTNIK_HTTP_LISTEN", &format!("127.0.0.1:{port}")),
            ("SPUTNIK_INGEST__MAX_FILE_SIZE", "100 KiB"),
        ],
    );
    assert_eq!(http_get(port, "/livez").0, 200);
    let token_file = data.join("admin.token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    assert_eq!(token.len(), 64);

    for (method, path) in [
        ("GET", "/api/documents"),
        ("PUT", "/api/documents?name=x.md"),
        ("DELETE", "/api/documents/1"),
        ("GET", "/api/users"),
        ("POST", "/api/invites"),
        ("GET", "/api/plans"),
        ("PUT", "/api/plans?name=p.toml"),
        ("GET", "/api/onboarding"),
        ("GET", "/api/report"),
        ("PUT", "/api/import?root=/tmp&source=a.md&display=a.md"),
        ("POST", "/api/import/stale"),
        ("POST", "/api/documents/remove"),
        ("GET", "/api/users/1"),
        ("PATCH", "/api/users/1"),
        ("POST", "/api/assignments"),
        ("POST", "/api/broadcasts"),
        ("GET", "/api/broadcasts/1"),
        ("GET", "/api/stats"),
        ("POST", "/api/reindex"),
    ] {
        assert_eq!(
            http(port, method, path, None, b""),
            (401, String::new()),
            "{method} {path} without a token"
        );
        assert_eq!(http(port, method, path, Some("wrong"), b"").0, 401, "{method} {path} with a wrong token");
    }
    let api = |method: &str, path: &str, body: &[u8]| {
        let (status, text) = http(port, method, path, Some(&token), body);
        (status, serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)))
    };
    let (status, documents) = api("GET", "/api/documents", b"");
    assert_eq!((status, documents.as_array().unwrap().len()), (200, 22));

    let (status, imported) =
        api("PUT", "/api/documents?name=parking.md", b"# Parking\n\nBicycles park in the inner yard.");
    assert_eq!((status, &imported["added"]), (200, &json!(1)), "{imported}");
    let (_, documents) = api("GET", "/api/documents", b"");
    let parking = documents.as_array().unwrap().iter().find(|d| d["source"] == "parking.md").unwrap().clone();
    let (status, _) = api("DELETE", &format!("/api/documents/{}", parking["id"]), b"");
    assert_eq!(status, 200);
    assert_eq!(api("GET", "/api/documents", b"").1.as_array().unwrap().len(), 22);
    let too_big = vec![b'a'; 150 * 1024];
    assert_eq!(http(port, "PUT", "/api/documents?name=big.md", Some(&token), &too_big).0, 413);
    assert_eq!(http(port, "POST", "/api/invites", Some(&token), &vec![b'{'; 70 * 1024]).0, 413);
    assert_eq!(
        http(port, "PUT", "/api/import?root=/tmp&source=big.md&display=big.md", Some(&token), &too_big).0,
        413
    );
    let (status, escaped) = api("PUT", "/api/import?root=/tmp&source=../etc/passwd.md&display=x", b"# x");
    assert_eq!(status, 422, "{escaped}");

    let (status, invite) = api(
        "POST",
        "/api/invites",
        br#"{"name": "Olga", "department": "Engineering", "start_date": "2026-12-01"}"#,
    );
    assert_eq!(status, 200, "{invite}");
    assert_eq!(invite["code"].as_str().unwrap().len(), 32);
    let (status, users) = api("GET", "/api/users", b"");
    assert_eq!((status, users[0]["name"].as_str()), (200, Some("Olga")));
    let (status, refused) = api("POST", "/api/invites", br#"{"name": "", "department": "X"}"#);
    assert_eq!(status, 422, "{refused}");

    let plan = std::fs::read(repo_path("assets/plans/engineering.en.toml")).unwrap();
    let (status, stored) = api("PUT", "/api/plans?name=engineering.en.toml", &plan);
    assert_eq!((status, &stored["id"]), (200, &json!("engineering-en")), "{stored}");
    let broken = String::from_utf8(plan).unwrap().replace("due_day = 2", "due_day = 0");
    let (status, errors) = api("PUT", "/api/plans?name=broken.toml", broken.as_bytes());
    assert_eq!(status, 422);
    assert!(errors["error"].as_str().unwrap().starts_with("broken.toml:"), "{errors}");
    assert_eq!(api("GET", "/api/plans", b"").1.as_array().unwrap().len(), 1);
    let (status, onboarding) = api("GET", "/api/onboarding", b"");
    assert_eq!((status, onboarding), (200, json!([])));
    let (status, report) = api("GET", "/api/report?since=7d", b"");
    assert_eq!((status, &report["questions"]), (200, &json!(0)), "{report}");
    assert_eq!(api("GET", "/api/report?since=soon", b"").0, 422);

    let (code, log) = terminate(bot);
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains(&token), "the admin token reached the log");
}

/// Runs headless Chromium (Debian's `chromium`; .ci/run installs it) on `url`, giving scripts
/// and fetches 10 s of virtual time; `extra` adds e.g. `--dump-dom` or `--screenshot=…`.
fn chromium(url: &str, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("the dashboard test needs Chromium (Debian package `chromium`; .ci/run installs it)");
    assert!(output.status.success(), "chromium failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// The dashboard in real headless Chromium: it signs in with the admin token, and its cards,
/// chart and tables show the numbers the API reports; a wrong token is refused. A screenshot is
/// kept in target/tmp/dashboard.png.
#[test]
fn the_dashboard_shows_what_the_api_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let code = invite(&data, "Anna", &[]);
    let server = Server::start();
    let port = free_port();
    let bot = serve_with(sputnik(&data), &server, &[("SPUTNIK_HTTP_LISTEN", &format!("127.0.0.1:{port}"))]);
    join(&server, 1001, &code);
    for question in
        ["How do I book a meeting room?", "Can I park my car at the office?", "What is the weather on Mars?"]
    {
        server.text(1001, "en", question);
    }
    server.wait_for(1001, 4);
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_owned();
    let (status, body) = http(port, "GET", "/api/report?since=30d", Some(&token), b"");
    assert_eq!(status, 200);
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((report["questions"].as_u64(), report["answered"].as_u64()), (Some(3), Some(2)));

    let dashboard = format!("http://127.0.0.1:{port}/dashboard");
    let dom = chromium(&format!("{dashboard}#token={token}"), &["--dump-dom"]);
    let shown = |id: &str| {
        let start = dom.find(&format!("id=\"{id}\">")).unwrap_or_else(|| panic!("no #{id} in:\n{dom}"))
            + id.len()
            + 6;
        dom[start..start + dom[start..].find('<').unwrap()].to_owned()
    };
    assert_eq!(shown("questions"), report["questions"].to_string());
    assert_eq!(shown("answered"), report["answered"].to_string());
    assert_eq!(
        shown("answer-rate"),
        format!("{} %", (report["answer_rate"].as_f64().unwrap() * 100.0).round())
    );
    assert_eq!(shown("helpful"), "0");
    let day = &report["per_day"][0];
    assert!(
        dom.contains(&format!(
            "data-date=\"{}\" data-kind=\"answered\" data-value=\"{}\"",
            day["date"].as_str().unwrap(),
            day["answered"]
        )),
        "the chart lacks the day's bar:\n{dom}"
    );
    assert!(dom.contains("What is the weather on Mars?"), "the gap table lacks the unanswered question");
    let top = report["most_used_documents"][0]["name"].as_str().unwrap();
    assert!(dom.contains(&format!("<td>{top}</td>")), "the documents table lacks {top}");
    assert!(!dom.contains(&token), "the token stayed in the page");

    let refused = chromium(&format!("{dashboard}#token=wrong"), &["--dump-dom"]);
    assert!(refused.contains("That token is not right."), "{refused}");

    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    chromium(
        &format!("{dashboard}#token={token}"),
        &[&format!("--screenshot={}", screenshot.display()), "--window-size=1280,1800"],
    );
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 20_000, "screenshot of {} bytes", png.len());

    let (code, log) = terminate(bot);
    assert_eq!(code, Some(0), "{log}");
}
