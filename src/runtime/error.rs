//! Why the gateway could not start or stopped.

use crate::config::ConfigError;
use crate::store::StoreError;
use std::fmt;
use std::io;

/// Why the gateway could not start or stopped.
#[derive(Debug)]
pub enum RunError {
    /// The store failed.
    Store(StoreError),
    /// A socket failed.
    Io(String, io::Error),
    /// The configuration cannot be used.
    Config(String),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Store(e) => write!(f, "{e}"),
            RunError::Io(what, e) => write!(f, "{what}: {e}"),
            RunError::Config(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> Self {
        RunError::Store(e)
    }
}

impl From<ConfigError> for RunError {
    fn from(e: ConfigError) -> Self {
        RunError::Config(e.0)
    }
}

impl From<std::convert::Infallible> for RunError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}
