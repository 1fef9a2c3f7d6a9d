//! End to end: the real `sputnik serve` binary against the fake Telegram Bot API
//! (`fake_bot.rs`), one file per feature: conversations, start-up, uploads, load and broadcasts,
//! onboarding, the HTTP side, admin commands while serving, generated answers.

mod admin;
mod conversation;
mod http;
mod llm;
mod load;
mod onboarding;
mod startup;
mod uploads;
