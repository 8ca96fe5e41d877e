//! The `api` stage (issue 5).
