//! Message catalogue: every string an employee reads, in Russian and English. The catalogues
//! are TOML files in `assets/i18n/`, compiled into the binary; a key missing from one language
//! falls back to English, and a test keeps both catalogues complete. Placeholder values are
//! HTML-escaped, since messages are sent as Telegram HTML.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::store::Language;

static CATALOGUES: LazyLock<(HashMap<String, String>, HashMap<String, String>)> = LazyLock::new(|| {
    let parse =
        |text: &str| toml::from_str::<HashMap<String, String>>(text).expect("a valid message catalogue");
    (parse(include_str!("../../assets/i18n/en.toml")), parse(include_str!("../../assets/i18n/ru.toml")))
});

/// The message `key` in `language`, with `{name}` placeholders replaced by escaped values.
pub fn message(language: Language, key: &str, args: &[(&str, &str)]) -> String {
    let (en, ru) = &*CATALOGUES;
    let catalogue = match language {
        Language::Ru => ru,
        Language::En => en,
    };
    let template = catalogue.get(key).or_else(|| en.get(key)).map_or(key, String::as_str);
    let mut out = template.to_owned();
    for (name, value) in args {
        out = out.replace(&format!("{{{name}}}"), &escape_html(value));
    }
    out
}

/// Escapes text for Telegram's HTML parse mode.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The language to use for a Telegram user who has not chosen one: Russian for Russian-speaking
/// clients, English otherwise.
pub fn from_telegram_code(code: Option<&str>) -> Language {
    match code.map(|c| c.split(['-', '_']).next().unwrap_or(c).to_ascii_lowercase()) {
        Some(c) if matches!(c.as_str(), "ru" | "uk" | "be" | "kk") => Language::Ru,
        _ => Language::En,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_catalogues_have_the_same_keys_and_placeholders() {
        let (en, ru) = &*CATALOGUES;
        let mut en_keys: Vec<_> = en.keys().collect();
        let mut ru_keys: Vec<_> = ru.keys().collect();
        en_keys.sort();
        ru_keys.sort();
        assert_eq!(en_keys, ru_keys);
        let placeholders = |s: &str| {
            let mut names: Vec<String> =
                s.split('{').skip(1).filter_map(|p| p.split_once('}').map(|(n, _)| n.to_owned())).collect();
            names.sort();
            names
        };
        for key in en.keys() {
            assert_eq!(placeholders(&en[key]), placeholders(&ru[key]), "{key}");
        }
    }

    #[test]
    fn placeholders_are_escaped() {
        let text = message(Language::En, "welcome", &[("name", "<script>&")]);
        assert!(text.contains("<b>&lt;script&gt;&amp;</b>"), "{text}");
        assert!(message(Language::Ru, "welcome", &[("name", "Анна")]).starts_with("Добро пожаловать"));
    }

    #[test]
    fn telegram_language_codes() {
        assert_eq!(from_telegram_code(Some("ru")), Language::Ru);
        assert_eq!(from_telegram_code(Some("en-US")), Language::En);
        assert_eq!(from_telegram_code(None), Language::En);
    }
}
