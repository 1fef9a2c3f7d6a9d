//! Starting `serve`: what it says when it cannot talk to Telegram, never showing the token.

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

#[test]
fn an_unreachable_bot_api_is_a_clear_error_that_never_shows_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback: nothing listens there.
    let output = run(sputnik(&tmp.path().join("data"))
        .arg("serve")
        .env("SPUTNIK_TELEGRAM_TOKEN", TOKEN)
        .env("SPUTNIK_TELEGRAM_API_URL", "http://127.0.0.1:9"));
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains("cannot reach the Telegram Bot API at http://127.0.0.1:9"), "{err}");
    assert!(!err.contains("TEST-TOKEN"), "{err}");
}
