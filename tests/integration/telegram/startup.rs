//! Starting `serve`: what it says when it cannot talk to Telegram, never showing the token.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::fake_bot::*;

#[test]
fn serve_without_a_token_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let output = run(sputnik(&tmp.path().join("data")).arg("serve"));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("SPUTNIK_TELEGRAM_TOKEN") && stderr(&output).contains("sputnik chat"),
        "{}",
        stderr(&output)
    );
}

/// Telegram unreachable at start (a network blip at boot): the service does not exit. It
/// retries with growing waits, `/livez` answers, `/readyz` says why it is not ready (never with
/// the token), and once the Bot API answers it serves as usual.
#[test]
fn serve_waits_for_an_unreachable_bot_api_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let code = invite(&data, "Anna", &[]);
    let (telegram_port, http_port) = (free_port(), free_port());
    let (api, http) = (format!("http://127.0.0.1:{telegram_port}"), format!("127.0.0.1:{http_port}"));
    // serve_with points the service at a fake; this one is overridden: nothing listens yet.
    let placeholder = Server::start();
    let bot = serve_with(
        sputnik(&data),
        &placeholder,
        &[("SPUTNIK_TELEGRAM_API_URL", &api), ("SPUTNIK_HTTP_LISTEN", &http)],
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let readyz = loop {
        if std::net::TcpStream::connect(("127.0.0.1", http_port)).is_ok() {
            let (status, body) = http_get(http_port, "/readyz");
            if body.contains("unreachable") {
                break (status, body);
            }
        }
        assert!(Instant::now() < deadline, "/readyz never said Telegram was unreachable");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(readyz.0, 503, "{}", readyz.1);
    assert!(readyz.1.contains(&format!("http://127.0.0.1:{telegram_port}")), "{}", readyz.1);
    assert!(!readyz.1.contains("TEST-TOKEN"), "{}", readyz.1);
    assert_eq!(http_get(http_port, "/livez"), (200, "ok\n".to_owned()));
    assert!(placeholder.calls("getMe").is_empty(), "the service used the address it was given");

    // The Bot API comes up: the service connects on its next try and answers.
    let server = Server::start_on(telegram_port);
    join(&server, 1001, &code);
    server.text(1001, "en", "How do I book a meeting room?");
    assert!(server.wait_for(1001, 2)[1]["text"].as_str().unwrap().contains("Google Calendar"));
    assert_eq!(http_get(http_port, "/readyz").0, 200);
    let log = stop(bot);
    assert!(log.contains("Telegram is not reachable yet; retrying"), "{log}");
}

/// A token Telegram rejects is not a blip: the start stops with the reason.
#[test]
fn a_rejected_token_stops_the_start_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let data = knowledge_base(tmp.path());
    let server = Server::start();
    let output = run(sputnik(&data)
        .arg("serve")
        .env("SPUTNIK_TELEGRAM_TOKEN", "123:rejected")
        .env("SPUTNIK_TELEGRAM_API_URL", format!("http://{}", server.address))
        .env("SPUTNIK_HTTP_LISTEN", "127.0.0.1:0"));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("Telegram rejected the bot token"), "{}", stderr(&output));
}
