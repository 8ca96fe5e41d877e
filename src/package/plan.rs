//! The test plan: declared in `SKILL.md` metadata, detected from the layout, or smoke.
//!
//! Declared (`source: declared`):
//! - `metadata.verify-test`: a shell command, run with `sh -c` in the skill root;
//! - `metadata.verify-runtime`: `shell`, `python` or `node` (anything else is refused); if
//!   absent, the runtime the layout detection below would pick, else `shell`;
//! - `metadata.verify-timeout`: a positive integer number of seconds (the policy caps it).
//!   It applies to detected and smoke plans too. `verify-runtime` without `verify-test` is
//!   refused: it would silently run a detected command in an image it was not detected for.
//!
//! Detected (`source: detected`), first match wins:
//! 1. python: a `test_*.py` / `*_test.py` file anywhere, or `conftest.py`, `pytest.ini`.
//!    `python3 -m unittest discover -s <dir> -v` when every test file is named `test*.py`,
//!    sits in one directory, imports `unittest` and none mentions `pytest` and there is no
//!    pytest config; otherwise `python3 -B -m pytest -q -p no:cacheprovider` (pytest also
//!    runs unittest-style tests; `-B` and no cache plugin keep it from writing into the tree);
//! 2. node: a root `package.json` whose `scripts.test` is a non-empty string other than npm's
//!    placeholder. npm is not in the runner image, so the script text itself is the command
//!    (run by `sh -c` like npm would), with `node_modules/.bin` put on `PATH` as npm does;
//! 3. shell: a root `test.sh`: `sh test.sh`.
//!
//! Smoke (`source: smoke`): no test was found, so check that every script parses without
//! running it. The runtime is `python` if any `*.py` file exists, else `node` if any
//! `*.js`/`*.mjs`/`*.cjs` exists, else `shell`. The command checks every `*.sh` with
//! `sh -n`, and in the python image every `*.py` with `compile()` (through `python3 -c`, so no
//! `__pycache__` is written), or in the node image every script with `node --check`.

use super::tree::FileRecord;
use super::{Manifest, PackageError, Runtime, TestPlan, TestSource};

/// npm's default `scripts.test`, which only fails.
const NPM_PLACEHOLDER: &str = "echo \"Error: no test specified\" && exit 1";

/// Longest `verify-test` command accepted (it ends up in the attestation).
const MAX_COMMAND_BYTES: usize = 4096;

/// Largest prefix of a `package.json` / test file read for detection.
const MAX_PROBE_BYTES: u64 = 1024 * 1024;

/// What detection learned from a file's content, captured while the package was read (the
/// first [`MAX_PROBE_BYTES`] bytes, which must be UTF-8).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Probe {
    /// A Python test file (`test_*.py`, `*_test.py`).
    PythonTest {
        /// It mentions `unittest` and not `pytest`.
        unittest_only: bool,
    },
    /// A `package.json` (probed only where it may be the skill root's).
    PackageJson {
        /// `scripts.test`, when usable (see the module docs), as the command to run.
        test_command: Option<String>,
    },
    /// A `*.txt` file, which may be the requirements file: its text when it is UTF-8 and at
    /// most [`MAX_REQUIREMENTS_BYTES`].
    Text {
        /// The text, or `None` when too large or not UTF-8.
        text: Option<String>,
    },
}

/// Largest requirements file accepted.
pub const MAX_REQUIREMENTS_BYTES: u64 = 64 * 1024;

/// How many bytes of a file named `name` the reader must capture for [`probe`], if any.
/// `at_root` tells whether the file may turn out to be at the skill root.
pub fn wants_content(name: &str, at_root: bool) -> Option<u64> {
    if is_python_test(name) || (at_root && name == "package.json") {
        Some(MAX_PROBE_BYTES)
    } else if name.ends_with(".txt") {
        Some(MAX_REQUIREMENTS_BYTES + 1)
    } else {
        None
    }
}

/// Learns what detection needs from the captured start of a file named `name`.
pub fn probe(name: &str, content: &[u8]) -> Option<Probe> {
    let text = std::str::from_utf8(content).ok();
    if is_python_test(name) {
        return Some(Probe::PythonTest {
            unittest_only: text.is_some_and(|t| t.contains("unittest") && !t.contains("pytest")),
        });
    }
    if name == "package.json" {
        return Some(Probe::PackageJson {
            test_command: text.and_then(node_test_script),
        });
    }
    if name.ends_with(".txt") {
        return Some(Probe::Text {
            text: text
                .filter(|_| content.len() as u64 <= MAX_REQUIREMENTS_BYTES)
                .map(str::to_string),
        });
    }
    None
}

/// The package's Python requirements: `metadata.verify-requirements` (a `.txt` file in the
/// package, relative to the skill root), else a root `requirements.txt`, else none. The file
/// is parsed strictly ([`super::requirements`]): a line that chooses a source (`-e`, a URL,
/// an index option) or that the parser does not understand makes the package invalid.
pub fn requirements(
    manifest: &Manifest,
    files: &[FileRecord],
) -> Result<Option<super::requirements::Requirements>, PackageError> {
    let bad = PackageError::InvalidRequirements;
    let declared = manifest
        .metadata
        .get("verify-requirements")
        .map(|v| v.trim());
    let path = match declared {
        Some(p) => {
            let p = p.strip_prefix("./").unwrap_or(p);
            if p.is_empty()
                || p.starts_with('/')
                || p.split('/').any(|c| c.is_empty() || c == "." || c == "..")
                || !p.ends_with(".txt")
            {
                return Err(bad(format!(
                    "metadata.verify-requirements {:?} must be a relative path to a .txt file \
                     in the package",
                    p.chars().take(200).collect::<String>()
                )));
            }
            p.to_string()
        }
        None => "requirements.txt".to_string(),
    };
    let Some(file) = files.iter().find(|f| f.path == path) else {
        return match declared {
            Some(_) => Err(bad(format!(
                "metadata.verify-requirements names {path:?}, which is not in the package"
            ))),
            None => Ok(None),
        };
    };
    let text = match &file.probe {
        Some(Probe::Text { text: Some(text) }) if file.len <= MAX_REQUIREMENTS_BYTES => text,
        _ => {
            return Err(bad(format!(
                "{path} is larger than {MAX_REQUIREMENTS_BYTES} bytes or not UTF-8"
            )))
        }
    };
    super::requirements::Requirements::parse(&path, text)
        .map(Some)
        .map_err(|e| bad(e.to_string()))
}

/// The smoke check for shell scripts (busybox `find` and `sh` understand it).
pub const SMOKE_SHELL: &str =
    "find . -type f -name '*.sh' | while IFS= read -r f; do sh -n \"$f\" || exit 1; done";

/// The smoke check for Python files: compile every file in memory.
pub const SMOKE_PYTHON: &str = "python3 -c \"import pathlib; [compile(p.read_bytes(), str(p), 'exec') for p in sorted(pathlib.Path('.').rglob('*.py'))]\"";

/// The smoke check for JavaScript files.
pub const SMOKE_NODE: &str = "find . -path ./node_modules -prune -o -type f \\( -name '*.js' -o -name '*.mjs' -o -name '*.cjs' \\) -print | while IFS= read -r f; do node --check \"$f\" || exit 1; done";

/// Builds the test plan for a validated manifest and tree (files relative to the skill
/// root, with the probes the read captured).
pub fn plan(manifest: &Manifest, files: &[FileRecord]) -> Result<TestPlan, PackageError> {
    let meta = &manifest.metadata;
    // Validated here so a bad value makes the package invalid at read time.
    declared_network(manifest)?;
    let timeout_secs = meta
        .get("verify-timeout")
        .map(|v| parse_timeout(v))
        .transpose()?;
    let runtime = meta
        .get("verify-runtime")
        .map(|v| {
            Runtime::parse(v).ok_or_else(|| PackageError::InvalidRuntime {
                value: v.chars().take(100).collect(),
            })
        })
        .transpose()?;
    if let Some(command) = meta.get("verify-test") {
        let command = command.trim();
        if command.is_empty() {
            return Err(PackageError::InvalidTestCommand {
                reason: "must not be empty",
            });
        }
        if command.len() > MAX_COMMAND_BYTES {
            return Err(PackageError::InvalidTestCommand {
                reason: "longer than 4096 bytes",
            });
        }
        if command.contains('\0') {
            return Err(PackageError::InvalidTestCommand {
                reason: "must not contain NUL",
            });
        }
        let runtime = runtime
            .or_else(|| detect(files).map(|(_, r)| r))
            .unwrap_or(Runtime::Shell);
        return Ok(TestPlan {
            command: command.to_string(),
            runtime,
            timeout_secs,
            source: TestSource::Declared,
        });
    }
    if runtime.is_some() {
        return Err(PackageError::InvalidMetadata {
            key: "verify-runtime".into(),
            reason: "only allowed together with verify-test",
        });
    }
    if let Some((command, runtime)) = detect(files) {
        return Ok(TestPlan {
            command,
            runtime,
            timeout_secs,
            source: TestSource::Detected,
        });
    }
    let (command, runtime) = smoke(files);
    Ok(TestPlan {
        command,
        runtime,
        timeout_secs,
        source: TestSource::Smoke,
    })
}

fn parse_timeout(value: &str) -> Result<u64, PackageError> {
    let v = value.trim();
    let bad = || PackageError::InvalidTimeout {
        value: value.chars().take(100).collect(),
    };
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match v.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(bad()),
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or(".", |(dir, _)| dir)
}

fn is_python_test(path: &str) -> bool {
    let name = file_name(path);
    name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"))
}

/// Layout detection; see the module docs for the rules.
fn detect(files: &[FileRecord]) -> Option<(String, Runtime)> {
    let find = |p: &str| files.iter().find(|f| f.path == p);
    let tests: Vec<&FileRecord> = files.iter().filter(|f| is_python_test(&f.path)).collect();
    let pytest_config = files.iter().any(|f| {
        let name = file_name(&f.path);
        name == "conftest.py" || name == "pytest.ini"
    });
    if !tests.is_empty() || pytest_config {
        return Some((python_command(&tests, pytest_config), Runtime::Python));
    }
    if let Some(Probe::PackageJson {
        test_command: Some(command),
    }) = find("package.json").and_then(|f| f.probe.as_ref())
    {
        return Some((command.clone(), Runtime::Node));
    }
    if find("test.sh").is_some() {
        return Some(("sh test.sh".to_string(), Runtime::Shell));
    }
    None
}

fn python_command(tests: &[&FileRecord], pytest_config: bool) -> String {
    const PYTEST: &str = "python3 -B -m pytest -q -p no:cacheprovider";
    if pytest_config || tests.is_empty() {
        return PYTEST.to_string();
    }
    let dir = parent(&tests[0].path);
    let unittest_only = tests.iter().all(|t| {
        parent(&t.path) == dir
            && file_name(&t.path).starts_with("test")
            && matches!(
                t.probe,
                Some(Probe::PythonTest {
                    unittest_only: true
                })
            )
    });
    if unittest_only {
        // Test file names are validated (no control characters); quote for the shell.
        format!("python3 -B -m unittest discover -s {} -v", shell_quote(dir))
    } else {
        PYTEST.to_string()
    }
}

fn node_test_script(text: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    let script = json.get("scripts")?.get("test")?.as_str()?.trim();
    if script.is_empty() || script == NPM_PLACEHOLDER || script.len() > MAX_COMMAND_BYTES {
        return None;
    }
    Some(format!("PATH=\"$PWD/node_modules/.bin:$PATH\" {script}"))
}

fn smoke(files: &[FileRecord]) -> (String, Runtime) {
    let any = |exts: &[&str]| {
        files
            .iter()
            .any(|f| exts.iter().any(|e| f.path.ends_with(e)))
    };
    if any(&[".py"]) {
        (format!("{SMOKE_SHELL} && {SMOKE_PYTHON}"), Runtime::Python)
    } else if any(&[".js", ".mjs", ".cjs"]) {
        (format!("{SMOKE_SHELL} && {SMOKE_NODE}"), Runtime::Node)
    } else {
        (SMOKE_SHELL.to_string(), Runtime::Shell)
    }
}

/// Single-quotes `s` for `sh`.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn manifest(meta: &[(&str, &str)]) -> Manifest {
        Manifest {
            name: "s".into(),
            description: "d".into(),
            license: None,
            compatibility: None,
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            allowed_tools: None,
        }
    }

    fn rec(path: &str) -> FileRecord {
        FileRecord {
            path: path.into(),
            executable: false,
            len: 0,
            sha256: [0; 32],
            tar_offset: None,
            probe: None,
        }
    }

    #[test]
    fn declared_plan_uses_metadata() {
        let m = manifest(&[
            ("verify-test", "make check"),
            ("verify-runtime", "node"),
            ("verify-timeout", "45"),
        ]);
        let p = plan(&m, &[]).unwrap();
        assert_eq!(p.command, "make check");
        assert_eq!(p.runtime, Runtime::Node);
        assert_eq!(p.timeout_secs, Some(45));
        assert_eq!(p.source, TestSource::Declared);
    }

    #[test]
    fn bad_runtime_and_timeout_are_refused() {
        for t in ["0", "-1", "1.5", "10s", "", "99999999999999999999999"] {
            let m = manifest(&[("verify-test", "x"), ("verify-timeout", t)]);
            assert!(
                matches!(plan(&m, &[]), Err(PackageError::InvalidTimeout { .. })),
                "{t}"
            );
        }
        let m = manifest(&[("verify-test", "x"), ("verify-runtime", "ruby")]);
        assert!(matches!(
            plan(&m, &[]),
            Err(PackageError::InvalidRuntime { .. })
        ));
        let m = manifest(&[("verify-runtime", "python")]);
        assert!(matches!(
            plan(&m, &[]),
            Err(PackageError::InvalidMetadata { .. })
        ));
        let m = manifest(&[("verify-test", "  ")]);
        assert!(matches!(
            plan(&m, &[]),
            Err(PackageError::InvalidTestCommand { .. })
        ));
    }

    #[test]
    fn detection_order_and_smoke_fallback() {
        let m = manifest(&[]);
        let p = plan(
            &m,
            &[rec("SKILL.md"), rec("test.sh"), rec("tests/test_x.py")],
        )
        .unwrap();
        assert_eq!(
            (p.runtime, p.source),
            (Runtime::Python, TestSource::Detected)
        );
        assert!(p.command.contains("pytest"));
        let p = plan(&m, &[rec("SKILL.md"), rec("test.sh")]).unwrap();
        assert_eq!(p.command, "sh test.sh");
        let p = plan(&m, &[rec("SKILL.md"), rec("scripts/a.js")]).unwrap();
        assert_eq!((p.runtime, p.source), (Runtime::Node, TestSource::Smoke));
        let p = plan(&m, &[rec("SKILL.md")]).unwrap();
        assert_eq!((p.runtime, p.source), (Runtime::Shell, TestSource::Smoke));
    }

    #[test]
    fn shell_quote_quotes_only_when_needed() {
        assert_eq!(shell_quote("tests"), "tests");
        assert_eq!(shell_quote("a b'c"), "'a b'\\''c'");
    }
}

/// Most names `metadata.verify-network` may list.
pub const MAX_DECLARED_HOSTS: usize = 64;

/// The network a skill declares (`metadata.verify-network`): `none` (the default, also when
/// absent) or a comma-separated list of host names, each optionally `*.domain` for its
/// subdomains, or an IPv4 literal. Lower-cased, without duplicates. The verdict compares
/// what the sink observes with this list; allowlist mode reaches exactly these names.
pub fn declared_network(manifest: &Manifest) -> Result<Vec<String>, PackageError> {
    let Some(value) = manifest.metadata.get("verify-network") else {
        return Ok(Vec::new());
    };
    let bad = |reason: String| PackageError::InvalidNetwork {
        value: value.chars().take(100).collect(),
        reason,
    };
    let trimmed = value.trim();
    if trimmed.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    if trimmed.is_empty() {
        return Err(bad(
            "must be \"none\" or a comma-separated list of host names".into(),
        ));
    }
    let mut hosts = Vec::new();
    for part in trimmed.split(',') {
        let host = part.trim().trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return Err(bad("has an empty entry".into()));
        }
        if host.parse::<std::net::Ipv4Addr>().is_err() && !valid_host_pattern(&host) {
            return Err(bad(format!(
                "{:?} is not a host name (letters, digits and '-' in dot-separated labels, \
                 optionally starting with \"*.\"; no scheme, port or path)",
                host.chars().take(100).collect::<String>()
            )));
        }
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    if hosts.len() > MAX_DECLARED_HOSTS {
        return Err(bad(format!("lists more than {MAX_DECLARED_HOSTS} names")));
    }
    Ok(hosts)
}

fn valid_host_pattern(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod network_tests {
    use super::*;

    fn with(value: &str) -> Manifest {
        Manifest {
            name: "s".into(),
            description: "d".into(),
            license: None,
            compatibility: None,
            metadata: [("verify-network".to_string(), value.to_string())].into(),
            allowed_tools: None,
        }
    }

    #[test]
    fn none_and_absent_declare_nothing_and_lists_are_normalised() {
        assert_eq!(
            declared_network(&with("none")).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            declared_network(&with(" PyPI.org, *.pythonhosted.org ,pypi.org,10.1.2.3")).unwrap(),
            vec!["pypi.org", "*.pythonhosted.org", "10.1.2.3"]
        );
    }

    #[test]
    fn urls_ports_paths_and_garbage_make_the_package_invalid() {
        for bad in [
            "",
            "https://pypi.org",
            "pypi.org:443",
            "pypi.org/simple",
            "pypi.org,,x.org",
            "localhost",
            "*.com.",
            "a..b",
            "-a.b",
            "ex ample.com",
        ] {
            let e = declared_network(&with(bad)).unwrap_err();
            assert!(
                matches!(e, PackageError::InvalidNetwork { .. }),
                "{bad:?}: {e}"
            );
            assert!(e.to_string().contains("verify-network"), "{e}");
        }
    }
}
