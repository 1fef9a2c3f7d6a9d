//! Language detection for documents and queries, restricted to the languages Sputnik serves.

use std::sync::LazyLock;

use whatlang::{Detector, Lang};

use crate::store::Language;

static DETECTOR: LazyLock<Detector> = LazyLock::new(|| Detector::with_allowlist(vec![Lang::Rus, Lang::Eng]));

/// How much text to look at: enough to be sure, bounded so huge files cost nothing extra.
const SAMPLE_BYTES: usize = 4096;

/// Russian or English; text without letters of either counts as English.
pub fn detect(text: &str) -> Language {
    let mut end = text.len().min(SAMPLE_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    match DETECTOR.detect_lang(&text[..end]) {
        Some(Lang::Rus) => Language::Ru,
        _ => Language::En,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn russian_english_and_mixed() {
        assert_eq!(detect("Как оформить отпуск и когда подавать заявление?"), Language::Ru);
        assert_eq!(detect("How do I request a new laptop from IT?"), Language::En);
        assert_eq!(
            detect("Настройка VPN: установите клиент Cisco AnyConnect и войдите через SSO."),
            Language::Ru
        );
        assert_eq!(detect("12345 -- 678"), Language::En);
    }
}
