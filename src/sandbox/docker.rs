//! The bollard runner: the only file that speaks to the Docker engine.

/// Runs container specs against a Docker engine.
#[derive(Clone)]
pub struct DockerRunner {}
