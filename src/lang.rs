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

/// Share of Cyrillic letters among the letters of a passage at which it counts as Russian. Low,
/// because Russian documents are full of Latin words (commands, code, product names) while
/// English ones practically never hold Cyrillic.
const RUSSIAN_SHARE: f32 = 0.15;

/// A document's language from all its passages: each passage with letters votes, Russian when at
/// least 15 % of its letters are Cyrillic. A first page in the other language (a copyright notice)
/// or chapters full of code do not decide for the whole document.
pub fn detect_document<'a>(passages: impl IntoIterator<Item = &'a str>) -> Language {
    let (mut russian, mut english) = (0usize, 0usize);
    for passage in passages {
        let (mut letters, mut cyrillic) = (0usize, 0usize);
        for c in passage.chars().filter(|c| c.is_alphabetic()) {
            letters += 1;
            cyrillic += usize::from(matches!(c, '\u{0400}'..='\u{04FF}'));
        }
        if letters == 0 {
            continue;
        }
        if cyrillic as f32 >= RUSSIAN_SHARE * letters as f32 {
            russian += 1;
        } else {
            english += 1;
        }
    }
    if russian > english { Language::Ru } else { Language::En }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_is_in_the_language_of_most_of_its_passages() {
        let copyright = "Copyright (C) 2023 The Authors. Permission is granted to copy and distribute.";
        let russian = "Пакет собирается командой dpkg-buildpackage, после чего его проверяет lintian.";
        let code = "Запустите: for f in *.deb; do dpkg-deb --info $f | grep Package; done";
        assert_eq!(detect_document([copyright, russian, russian]), Language::Ru);
        assert_eq!(
            detect_document([russian, code, code]),
            Language::Ru,
            "code with Russian words is Russian"
        );
        assert_eq!(detect_document([copyright, copyright, russian]), Language::En);
        assert_eq!(detect_document(["12345", "---"]), Language::En);
    }

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
