//! `skill-verifier serve`: the daemon.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::api::Daemon;
use crate::config::Settings;
use crate::sandbox::{DockerRunner, Engines};

/// Arguments.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8080).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Worker count (default: twice the cores, at least 4).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Do not make sure the runner images exist at start-up.
    #[arg(long)]
    pub no_prepare: bool,
    /// The job store: `postgres://user@host:port/db` to share one database between several
    /// daemons, or `sqlite` (the default: SQLite in the data dir). Also config `store`, env
    /// `SKILL_VERIFIER_STORE`.
    #[arg(long)]
    pub store: Option<String>,
    /// Marks a key in the store's key registry as retired (repeatable): it stays published
    /// by `GET /keys` with `retired_at`, for attestations it signed before. This daemon's
    /// own key cannot be retired while it signs with it.
    #[arg(long = "retire-key", value_name = "KEY_ID")]
    pub retire_keys: Vec<String>,
}

/// Runs the daemon until SIGTERM or Ctrl-C.
pub fn run(args: ServeArgs, mut settings: Settings) -> anyhow::Result<u8> {
    if let Some(listen) = args.listen {
        settings.server.listen = listen;
    }
    if let Some(workers) = args.workers {
        settings.server.workers = workers;
    }
    if let Some(store) = args.store {
        settings.store.url = Some(store);
        if let Err(e) = settings.validate() {
            eprintln!("error: {e}");
            return Ok(crate::cli::EXIT_ERROR);
        }
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let runner = match connect_engines(&settings).await {
            Ok(runner) => runner,
            Err(message) => {
                eprintln!("error: {message}");
                return Ok(crate::cli::EXIT_ERROR);
            }
        };
        for engine in runner.runners() {
            // Containers of CLI runs that died without cleaning up (see sandbox lease);
            // this daemon's own leftovers are reaped by instance when the daemon opens.
            let name = &engine.target().name;
            match engine.reap_dead_leases().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(engine = %name, removed = n, "removed containers of dead CLI runs"),
                Err(e) => tracing::warn!(engine = %name, error = %e, "could not reap containers of dead CLI runs"),
            }
            if !args.no_prepare {
                prepare_images(engine, &settings).await;
            }
        }
        let daemon = Daemon::open(settings.clone(), Arc::new(runner)).await?;
        for key_id in &args.retire_keys {
            match daemon.retire_key(key_id).await {
                Ok(true) => tracing::info!(key_id, "key retired"),
                Ok(false) => tracing::warn!(key_id, "no such active key in the store's registry"),
                Err(e) => {
                    eprintln!("error: retiring key {key_id}: {e:#}");
                    return Ok(crate::cli::EXIT_ERROR);
                }
            }
        }
        let listener = tokio::net::TcpListener::bind(settings.server.listen)
            .await
            .with_context(|| format!("binding {}", settings.server.listen))?;
        eprintln!(
            "skill-verifier {} listening on http://{}",
            crate::VERSION,
            listener.local_addr()?
        );
        daemon.serve(listener, shutdown_signal()).await?;
        Ok(crate::cli::EXIT_OK)
    })
}

/// Connects every engine (`[[sandbox.engines]]`, else Docker's environment) and checks that
/// each has the configured OCI runtime. An engine that does not answer stops the start, with
/// its name: a daemon never starts on fewer engines than configured without saying so.
async fn connect_engines(settings: &Settings) -> Result<Engines, String> {
    let mut runners = Vec::new();
    for target in settings.engines() {
        let (name, host) = (target.name.clone(), target.host.clone());
        let runner = DockerRunner::connect_to(target)
            .await
            .map_err(|e| format!("engine {name} ({host}): {e}"))?
            .with_background_removal()
            .with_warm_pool(settings.server.warm_containers);
        runner
            .require_runtime(settings.sandbox.runtime_name())
            .await
            .map_err(|e| format!("engine {name} ({host}): {e}"))?;
        tracing::info!(engine = %name, host = %host, transport = runner.target().transport(), capacity = runner.target().capacity, "engine connected");
        runners.push(runner);
    }
    Ok(Engines::new(runners))
}

/// Makes sure every configured runner image exists; a failure is logged, not fatal (the
/// daemon still serves, `/health` and job errors say what is missing).
async fn prepare_images(runner: &DockerRunner, settings: &Settings) {
    use crate::sandbox::images::{prepare, PrepareOptions};
    let engine = runner.target().name.clone();
    let mut progress = |line: &str| tracing::info!(engine = %engine, "images: {line}");
    match prepare(
        runner,
        &settings.sandbox.images,
        PrepareOptions::default(),
        &mut progress,
    )
    .await
    {
        Ok(done) => {
            for image in done {
                tracing::info!(runtime = image.runtime.as_str(), image = %image.image, digest = %image.digest, "runner image ready");
            }
        }
        Err(e) => tracing::error!(
            error = %e,
            "runner images are not ready; jobs needing them will fail until `skill-verifier images prepare` succeeds"
        ),
    }
    if settings.sandbox.network_mode() != crate::sandbox::NetworkMode::None {
        let image = &settings.sandbox.sink_image;
        match crate::sandbox::images::prepare_sink(
            runner,
            image,
            PrepareOptions::default(),
            &mut progress,
        )
        .await
        {
            Ok(done) => {
                tracing::info!(image = %done.image, digest = %done.digest, "sink image ready")
            }
            Err(e) => tracing::error!(
                error = %e,
                "the network sink's image is not ready; jobs will fail until `skill-verifier images prepare` succeeds"
            ),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}
