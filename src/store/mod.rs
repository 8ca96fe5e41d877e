//! The `store` stage (issue 5).
