//! Unit tests that need the pool's internals (a thread start that fails on
//! cue: see `SpawnGate`).
