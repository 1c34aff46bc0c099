//! Run blocking I/O and CPU-heavy work from async Rust without stalling the
//! event loop.
#![deny(unsafe_code)]

pub mod coop;
pub mod monitor;
