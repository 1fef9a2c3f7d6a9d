//! Whatever a language model sends back: citation checking and the Telegram HTML renderer on
//! arbitrary text never panic, and the HTML is always balanced and uses only allowed tags.
#![no_main]

use libfuzzer_sys::fuzz_target;

fn balanced(html: &str) -> bool {
    let mut stack = Vec::new();
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        let Some(close) = rest[open..].find('>') else { return false };
        let tag = &rest[open + 1..open + close];
        rest = &rest[open + close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            if stack.pop().as_deref() != Some(name) {
                return false;
            }
        } else {
            let name = tag.split_whitespace().next().unwrap_or_default().to_owned();
            if !["b", "i", "s", "code", "pre", "a"].contains(&name.as_str()) {
                return false;
            }
            stack.push(name);
        }
    }
    stack.is_empty() && !rest.contains('>')
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let html = sputnik::answer::render::to_telegram_html(text);
    assert!(balanced(&html), "unbalanced or foreign tags: {html:?}");
    let _ = sputnik::answer::generate::check(text, 3);
    let (_, cited) = sputnik::answer::generate::keep_valid_markers(text, 3);
    assert!(cited.iter().all(|n| (1..=3).contains(n)));
});
