//! Loop monitoring (placeholder: filled in by the monitor work).
