//! Integration tests: the real store, the real index and the real binary on temporary data
//! directories. In-process tests build an `App`; `cli` tests spawn `sputnik` itself.

mod access;
mod bad_input;
mod balancer;
mod chat;
mod cli;
mod cluster;
mod cluster_load;
mod common;
mod crash;
mod fake_bot;
mod fake_llm;
mod faults;
mod handbook;
mod hostile;
mod incremental;
mod layout;
mod multilingual;
mod onboarding;
mod parallel;
mod postgres;
mod quality;
mod report;
mod semantic;
mod soak;
mod telegram;
