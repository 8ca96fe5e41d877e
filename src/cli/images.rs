//! `skill-verifier images ...`: make sure the configured runner images exist.

use clap::{Args, Subcommand};

use crate::config::Settings;
use crate::sandbox::images::{prepare, prepare_sink, PrepareOptions};
use crate::sandbox::DockerRunner;

use super::{EXIT_ERROR, EXIT_OK};

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Ensure every configured runtime image exists: present -> done, else pull, else build
    /// locally from Debian packages (needs root, a Debian mirror and the docker CLI).
    Prepare(PrepareArgs),
}

/// Flags of `images prepare`.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// Do not try a registry; build what is missing.
    #[arg(long)]
    pub no_pull: bool,
    /// Rebuild every image even if present.
    #[arg(long)]
    pub rebuild: bool,
}

/// Runs the subcommand; returns the exit code.
pub fn run(cmd: ImagesCommand, settings: &Settings) -> anyhow::Result<u8> {
    let ImagesCommand::Prepare(args) = cmd;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let images = settings.sandbox.images.clone();
    let sink_image = settings.sandbox.sink_image.clone();
    let engines = settings.engines();
    runtime.block_on(async move {
        let options = PrepareOptions {
            no_pull: args.no_pull,
            force_build: args.rebuild,
        };
        // Every engine gets every image: a job may go to any of them.
        for target in engines {
            let name = target.name.clone();
            let runner = match DockerRunner::connect_to(target).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: engine {name}: {e}");
                    return Ok(EXIT_ERROR);
                }
            };
            let mut progress = |line: &str| eprintln!("images[{name}]: {line}");
            match prepare(&runner, &images, options, &mut progress).await {
                Ok(done) => {
                    for image in done {
                        println!(
                            "{}\t{}\t{}\t{name}",
                            image.runtime.as_str(),
                            image.image,
                            image.digest
                        );
                    }
                }
                Err(e) => {
                    eprintln!("error: engine {name}: {e}");
                    return Ok(EXIT_ERROR);
                }
            }
            // The network sink's image, whatever the configured mode: a later run may ask
            // for `observe` without preparing again.
            match prepare_sink(&runner, &sink_image, options, &mut progress).await {
                Ok(done) => println!("sink\t{}\t{}\t{name}", done.image, done.digest),
                Err(e) => {
                    eprintln!("error: engine {name}: {e}");
                    return Ok(EXIT_ERROR);
                }
            }
        }
        Ok(EXIT_OK)
    })
}
