//! TEE quote providers: `simulated`, `dstack`, `none`.
