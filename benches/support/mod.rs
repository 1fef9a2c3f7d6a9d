//! Shared by the benches: a deterministic generator and the sample handbook's vocabulary.

use std::path::Path;
use std::time::Duration;

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

/// Questions an employee might ask of the handbook, in English.
#[allow(dead_code)] // Not every bench that includes this module asks questions.
pub fn questions() -> Vec<String> {
    [
        "How do I get a laptop?",
        "Who approves my expenses?",
        "How do I connect to the VPN from a hotel?",
        "What is the daily allowance abroad?",
        "Can I work from another country?",
        "Does insurance cover the dentist?",
        "When are production releases?",
        "How long is maternity leave?",
        "How do I book a meeting room?",
        "I clicked a phishing link, what now?",
        "How much is the learning budget?",
        "Where do I park my bike?",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The same kind of questions in Russian.
#[allow(dead_code)] // Not every bench that includes this module asks in Russian.
pub fn questions_ru() -> Vec<String> {
    [
        "Как получить ноутбук?",
        "Кто утверждает мои расходы?",
        "Как подключиться к VPN из гостиницы?",
        "Какие суточные в зарубежной командировке?",
        "Можно ли работать из другой страны?",
        "Покрывает ли страховка стоматолога?",
        "Когда выходят релизы в продакшен?",
        "Сколько длится декретный отпуск?",
        "Как забронировать переговорную?",
        "Я перешёл по фишинговой ссылке, что делать?",
        "Какой бюджет на обучение?",
        "Где оставить велосипед?",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Which parts of a bench to run: `SPUTNIK_BENCH_PARTS=a,b` (default: all).
#[allow(dead_code)] // Not every bench has parts.
pub fn part(name: &str) -> bool {
    std::env::var("SPUTNIK_BENCH_PARTS").map_or(true, |parts| parts.split(',').any(|p| p.trim() == name))
}

/// Milliseconds of a duration.
#[allow(dead_code)] // Not every bench prints milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p` quantile (0–1) of sorted samples.
#[allow(dead_code)] // Not every bench reports quantiles.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A `/proc/<process>/status` figure in MiB (0 if unreadable); `process` may be `self`.
#[allow(dead_code)] // Not every bench measures memory.
pub fn process_status_mib(process: &str, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}
