//! The test PostgreSQL (the cluster `scripts/setup` starts): each test gets a fresh database
//! of its own, so tests run in parallel. Outside CI an unreachable server skips the test
//! loudly; with `CI` set it fails the test, as the Docker tests do.

/// The server the tests use: `SKILL_VERIFIER_TEST_PG`, else the setup script's cluster.
pub fn server_url() -> String {
    std::env::var("SKILL_VERIFIER_TEST_PG")
        .unwrap_or_else(|_| "postgres://skill_verifier@127.0.0.1:55432/skill_verifier".to_string())
}

/// A URL naming a brand-new empty database on the test server; `None` (with a loud line on
/// stderr) when the server does not answer and `CI` is unset.
pub async fn fresh_database() -> Option<String> {
    let url = server_url();
    let connected = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio_postgres::connect(&url, tokio_postgres::NoTls),
    )
    .await;
    let (client, connection) = match connected {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return unreachable_pg(&url, &e.to_string()),
        Err(_) => return unreachable_pg(&url, "no answer within 10s"),
    };
    tokio::spawn(connection);
    let name = format!("sv_test_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creating a test database (the role needs CREATEDB; see scripts/setup)");
    // Swap the database name at the end of the URL (no query string in test URLs).
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}

fn unreachable_pg(url: &str, reason: &str) -> Option<String> {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set and the test PostgreSQL at {url} is unreachable: {reason} (run scripts/setup)");
    }
    eprintln!(
        "!!!!!!!! SKIPPING: test PostgreSQL at {url} unreachable ({reason}); run scripts/setup, or set CI=1 to fail instead"
    );
    None
}
