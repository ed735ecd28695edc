//! Fuzzing on stable Rust: every decoder that reads bytes from a socket or a disk, driven by
//! a seeded mutator over real inputs (captured client frames, files insync wrote), with
//! panics caught and each input's allocations measured against its size.
//! `insync-fuzz` runs a campaign (`scripts/fuzz.sh`); `tests/campaign.rs` runs a bounded
//! one in CI and replays every earlier finding kept under `regressions/`.
pub mod mutate;
pub mod runner;
pub mod targets;
