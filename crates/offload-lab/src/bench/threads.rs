//! Thread-pool benchmark (placeholder).
use super::BenchArgs;
use crate::report::BenchLine;

pub(crate) fn run(_args: &BenchArgs) -> anyhow::Result<Vec<BenchLine>> {
    Ok(Vec::new())
}
