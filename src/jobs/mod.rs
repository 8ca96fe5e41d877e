//! The `jobs` stage (issue 5).
