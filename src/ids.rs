//! Identifier newtypes shared by several stages.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job id: a random (v4) UUID. `parse` is the only way in from text, so a malformed id in a
/// URL is refused before it reaches the store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

/// Text that is not a UUID.
#[derive(Debug, thiserror::Error)]
#[error("not a job id (want a UUID): {0:?}")]
pub struct ParseJobIdError(String);

impl JobId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// Parses the hyphenated UUID form.
    pub fn parse(text: &str) -> Result<Self, ParseJobIdError> {
        Uuid::try_parse(text)
            .map(Self)
            .map_err(|_| ParseJobIdError(text.chars().take(64).collect()))
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0.hyphenated())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_uuids() {
        let id = JobId::new();
        assert_eq!(JobId::parse(&id.to_string()).unwrap(), id);
        assert!(JobId::parse("../../etc/passwd").is_err());
        assert!(JobId::parse("").is_err());
    }
}
