//! Cooperative yielding (placeholder: filled in by the coop work).
