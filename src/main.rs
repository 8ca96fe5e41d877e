//! The `skill-verifier` binary: parses the command line and calls into the library.

fn main() -> std::process::ExitCode {
    skill_verifier::cli::main()
}
