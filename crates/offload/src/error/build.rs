//! [`BuildError`]: a configuration that cannot be built.

use std::fmt;

/// A configuration that cannot be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// A setting is out of range; the message names it.
    Invalid(&'static str),
    /// The default pool was already created, so it can no longer be configured.
    DefaultPoolExists,
    /// A worker thread could not be started.
    Spawn(std::io::Error),
    /// A dedicated executor's initialiser failed or panicked; the message says how.
    Init(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Invalid(what) => write!(f, "invalid configuration: {what}"),
            BuildError::DefaultPoolExists => {
                f.write_str("the default pool is already running and can no longer be configured")
            }
            BuildError::Spawn(_) => f.write_str("could not start a worker thread"),
            BuildError::Init(m) => write!(f, "initialiser failed: {m}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}
