//! Shared by the benches: a deterministic generator and the sample handbook's vocabulary.

use std::path::Path;

/// SplitMix64: every run sees the same corpus and queries.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn pick<'a>(&mut self, words: &'a [String]) -> &'a str {
        &words[(self.next() % words.len() as u64) as usize]
    }
}

/// Words (three letters or more) of the sample handbook's text files, split into English and
/// Russian.
pub fn vocabulary() -> (Vec<String>, Vec<String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/handbook");
    let (mut en, mut ru) = (Vec::new(), Vec::new());
    for entry in walkdir::WalkDir::new(root).into_iter().flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        for word in text.split(|c: char| !c.is_alphabetic()) {
            if word.chars().count() < 3 {
                continue;
            }
            let word = word.to_lowercase();
            if word.chars().any(|c| ('а'..='я').contains(&c)) {
                ru.push(word);
            } else if word.is_ascii() {
                en.push(word);
            }
        }
    }
    (en, ru)
}
