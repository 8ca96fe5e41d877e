//! Fetching Python distributions: `pip download` in a sandboxed container whose only way out
//! is the network sink in allowlist mode, open to the index's hosts.
//!
//! The container runs [`DRIVER`] (our script, in the python runner image), which speaks a
//! small protocol on stdout: one JSON line (`status`, the files, pip's exit code, the Python
//! version and platform), then, when `status` is `ok`, a tar of the downloaded files. pip's
//! own output goes to stderr, which becomes the message when pip fails.
//!
//! Before pip runs, the driver asks the index itself (a HEAD with the trust store, up to three tries), so
//! an index the sandbox cannot reach is told apart from requirements that cannot be met
//! without reading pip's messages: the first is our fault, the second the skill's.

use std::io::Read;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use super::cache::{Fetched, FetchedFile};
use super::{Dependency, DepsError, DepsSettings};
use crate::package::requirements::Requirements;
use crate::package::TreeTar;
use crate::sandbox::{ContainerSpec, NetworkMode, Policy, RunOutcome, Runner};

/// The fetch driver (run by the image's `python3` in `/work`).
pub const DRIVER: &str = r#"import json, os, ssl, subprocess, sys, sysconfig, tarfile, time, urllib.error, urllib.request
cfg = json.load(open("fetch.json"))
out = sys.stdout.buffer
def say(obj):
    out.write(json.dumps(obj).encode() + b"\n")
    out.flush()
info = {"python": "%d.%d.%d" % sys.version_info[:3], "platform": sysconfig.get_platform()}
ctx = ssl.create_default_context(cafile="ca.pem")
for attempt in range(3):
    try:
        req = urllib.request.Request(cfg["index"].rstrip("/") + "/", method="HEAD")
        urllib.request.urlopen(req, context=ctx, timeout=20).close()
        break
    except urllib.error.HTTPError:
        break
    except Exception as e:
        if attempt == 2:
            say(dict(info, status="unreachable", error="%s: %s" % (type(e).__name__, getattr(e, "reason", e))))
            sys.exit(0)
        time.sleep(1 + attempt)
os.makedirs("dl")
cmd = [sys.executable, "-m", "pip", "download", "--dest", "dl", "--index-url", cfg["index"],
       "--cert", "ca.pem", "--no-cache-dir", "--disable-pip-version-check", "--no-input",
       "--progress-bar", "off", "--retries", "2", "--timeout", "20", "-r", "requirements.txt"]
if not cfg["allow_sdist"]:
    cmd += ["--only-binary", ":all:"]
rc = subprocess.call(cmd, stdout=2, stdin=subprocess.DEVNULL)
files = sorted((n, os.path.getsize(os.path.join("dl", n))) for n in os.listdir("dl"))
st = os.statvfs(".")
full = st.f_bavail * st.f_frsize < 1024 * 1024
base = dict(info, files=[{"file": n, "bytes": b} for n, b in files], pip_exit=rc)
if rc != 0:
    say(dict(base, status="too_large" if full else "pip_failed"))
elif sum(b for _, b in files) > cfg["max_bytes"]:
    say(dict(base, status="too_large"))
elif len(files) > cfg["max_files"]:
    say(dict(base, status="too_many"))
else:
    say(dict(base, status="ok"))
    with tarfile.open(fileobj=out, mode="w|") as t:
        for n, _ in files:
            t.add(os.path.join("dl", n), arcname=n, recursive=False)
    out.flush()
"#;

/// Room on the fetch's tmpfs beyond the download cap, so a set just over the cap still
/// lands and its largest file can be named.
const HEADROOM: u64 = 256 * 1024 * 1024;
/// How often a fetch whose pip failed is tried before the failure counts.
const FETCH_TRIES: u64 = 3;
/// pip's own memory, beyond what the tmpfs holds (tmpfs pages are charged to the container).
const PIP_MEMORY: u64 = 512 * 1024 * 1024;

/// The driver's status line.
#[derive(Debug, serde::Deserialize)]
struct Report {
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    files: Vec<ReportFile>,
    #[serde(default)]
    python: String,
    #[serde(default)]
    platform: String,
}

#[derive(Debug, serde::Deserialize)]
struct ReportFile {
    file: String,
    bytes: u64,
}

/// The fetch container's spec: the test's (image, labels, policy) with the driver as its
/// command, allowlist egress to the index's hosts, and limits sized for the download.
pub fn fetch_spec(base: &ContainerSpec, policy: &Policy, settings: &DepsSettings) -> ContainerSpec {
    let mut spec = base.clone();
    let command = "python3 fetch.py".to_string();
    if let Some(last) = spec.cmd.last_mut() {
        *last = command.clone();
    }
    spec.command = command;
    spec.install = None;
    spec.network = NetworkMode::Allowlist.as_str().to_string();
    spec.sink_image = Some(policy.sink_image.clone());
    spec.allow = settings.allowed_hosts();
    spec.allow_private = policy.allow_private_egress;
    // The sink needs a runtime whose network the engine sets up (runc); the fetch runs pip
    // alone, on binary wheels by default: no package code runs in it.
    spec.oci_runtime = None;
    let l = &mut spec.limits;
    let room = settings.max_download_bytes.saturating_add(HEADROOM);
    l.timeout_secs = settings.fetch_timeout_secs;
    l.work_bytes = room;
    l.fsize_bytes = l.fsize_bytes.max(room);
    l.memory_bytes = l.memory_bytes.max(PIP_MEMORY).saturating_add(room);
    l.output_bytes = settings.max_download_bytes.saturating_add(1024 * 1024);
    l.output_kill_bytes = l.output_bytes.saturating_mul(2);
    l.pids = l.pids.max(256);
    spec
}

/// Fetches the distributions `requirements` need. `scratch` is the cache's staging folder.
pub async fn fetch(
    runner: &dyn Runner,
    base: &ContainerSpec,
    policy: &Policy,
    settings: &DepsSettings,
    requirements: &Requirements,
    scratch: PathBuf,
    cancel: &CancellationToken,
) -> Result<Fetched, DepsError> {
    let ours = |what: &str, e: &dyn std::fmt::Display| DepsError::Ours(format!("{what}: {e}"));
    let ca = tokio::fs::read(&settings.ca_bundle).await.map_err(|e| {
        DepsError::Ours(format!(
            "reading the trust store {} ([deps] ca_bundle): {e}",
            settings.ca_bundle.display()
        ))
    })?;
    tokio::fs::create_dir_all(&scratch)
        .await
        .map_err(|e| ours("creating the fetch's scratch folder", &e))?;
    let work = tempfile::tempdir_in(&scratch)
        .map_err(|e| ours("creating the fetch's scratch folder", &e))?;
    let config = serde_json::json!({
        "index": settings.python_index,
        "allow_sdist": settings.allow_sdist,
        "max_bytes": settings.max_download_bytes,
        "max_files": settings.max_distributions,
    });
    let tar_path = work.path().join("fetch.tar");
    let tree = {
        let (tar_path, text) = (tar_path.clone(), requirements.canonical());
        let config = serde_json::to_vec(&config).expect("plain data serializes");
        tokio::task::spawn_blocking(move || {
            write_tar(
                &tar_path,
                &[
                    ("ca.pem", ca.as_slice()),
                    ("fetch.json", config.as_slice()),
                    ("fetch.py", DRIVER.as_bytes()),
                    ("requirements.txt", text.as_bytes()),
                ],
            )
        })
        .await
        .map_err(|e| ours("writing the fetch's files", &e))?
        .map_err(|e| ours("writing the fetch's files", &e))?
    };
    let spec = fetch_spec(base, policy, settings);
    // pip's failures are retried: a dropped connection on the way to the index reads, in
    // pip's words, like a distribution that does not exist ("from versions: none"). Seen
    // under a loaded engine. A requirement that cannot be met fails every try.
    let mut tries = 0;
    let (outcome, report, newline) = loop {
        tries += 1;
        let outcome = runner
            .run(&spec, &tree, cancel.clone())
            .await
            .map_err(|e| ours("running the dependency fetch", &e))?;
        if outcome.cancelled {
            return Err(DepsError::Ours("cancelled".into()));
        }
        let newline = outcome.stdout.iter().position(|b| *b == b'\n');
        let report: Option<Report> =
            newline.and_then(|n| serde_json::from_slice(&outcome.stdout[..n]).ok());
        match &report {
            Some(r) if r.status == "pip_failed" && tries < FETCH_TRIES => {
                tracing::info!(tries, "pip failed; fetching again");
                tokio::time::sleep(std::time::Duration::from_secs(2 * tries)).await;
            }
            _ => break (outcome, report, newline),
        }
    };
    let _ = tokio::fs::remove_file(&tar_path).await;
    let stdout = &outcome.stdout;
    let Some(report) = report else {
        return Err(classify_silent(&outcome, settings, requirements));
    };
    let body = &stdout[newline.unwrap_or(0) + 1..];
    let path = &requirements.path;
    let largest = || {
        report
            .files
            .iter()
            .max_by_key(|f| f.bytes)
            .map(|f| format!("; the largest is {} ({} bytes)", f.file, f.bytes))
            .unwrap_or_default()
    };
    match report.status.as_str() {
        "ok" => {}
        "unreachable" => {
            return Err(DepsError::Ours(format!(
                "the Python index {} cannot be reached from the sandbox's egress ({}); set \
                 [deps] python_index (env SKILL_VERIFIER_DEPS__PYTHON_INDEX) to an index this \
                 engine reaches, and [deps] ca_bundle to a trust store that verifies it",
                settings.python_index,
                report.error.unwrap_or_default()
            )))
        }
        "too_large" => {
            return Err(DepsError::Skill(format!(
                "{path}: the distributions exceed [deps] max_download_bytes = {} bytes{}",
                settings.max_download_bytes,
                largest()
            )))
        }
        "too_many" => {
            return Err(DepsError::Skill(format!(
                "{path}: the requirements pull in {} distributions, more than [deps] \
                 max_distributions = {}",
                report.files.len(),
                settings.max_distributions
            )))
        }
        _ => return Err(classify_pip_failure(&outcome, settings, path)),
    }
    if outcome.output_truncated {
        return Err(DepsError::Skill(format!(
            "{path}: the distributions exceed [deps] max_download_bytes = {} bytes{}",
            settings.max_download_bytes,
            largest()
        )));
    }
    let files = {
        let (body, dir) = (body.to_vec(), work.path().to_path_buf());
        let listed: Vec<(String, u64)> = report
            .files
            .iter()
            .map(|f| (f.file.clone(), f.bytes))
            .collect();
        tokio::task::spawn_blocking(move || unpack(&body, &listed, &dir))
            .await
            .map_err(|e| ours("reading the fetched files", &e))?
            .map_err(|e| DepsError::Ours(format!("reading the fetched files: {e}")))?
    };
    check_hashes(requirements, &files)?;
    Ok(Fetched {
        files,
        python: report.python,
        platform: report.platform,
        scratch: work,
    })
}

/// A fetch that printed no status line: killed by a limit, or the image cannot run it.
fn classify_silent(
    outcome: &RunOutcome,
    settings: &DepsSettings,
    requirements: &Requirements,
) -> DepsError {
    let path = &requirements.path;
    if outcome.timed_out {
        return DepsError::Skill(format!(
            "{path}: resolving and downloading took longer than [deps] fetch_timeout_secs = {} s",
            settings.fetch_timeout_secs
        ));
    }
    if outcome.oom_killed {
        return DepsError::Ours(format!(
            "the dependency fetch ran out of memory ({} bytes)",
            outcome.limits.memory_bytes
        ));
    }
    DepsError::Ours(format!(
        "the dependency fetch ended with exit code {} without a report (does the python \
         image have pip? run `skill-verifier images prepare`): {}",
        outcome.exit_code,
        tail(&outcome.stderr, 800)
    ))
}

/// pip failed: our fault if it went (or was sent) somewhere the fetch may not reach, the
/// skill's otherwise, with pip's error lines, which name the requirement.
fn classify_pip_failure(outcome: &RunOutcome, settings: &DepsSettings, path: &str) -> DepsError {
    if let Some(network) = &outcome.network {
        let refused: Vec<String> = network
            .observed
            .iter()
            .filter(|o| !o.allowed && o.protocol != crate::sink::record::Protocol::Dns)
            .map(|o| o.describe())
            .collect();
        if !refused.is_empty() {
            return DepsError::Ours(format!(
                "the index {} sent pip to destinations the fetch may not reach ({}); add their \
                 hosts to [deps] python_hosts",
                settings.python_index,
                refused.join(", ")
            ));
        }
    }
    // pip's report: from its first error line on (the lines after it name the requirement,
    // e.g. a hash mismatch's `six==1.16.0 from https://…`), whitespace collapsed.
    let stderr = String::from_utf8_lossy(&outcome.stderr);
    let reason = match stderr.find("ERROR:") {
        Some(at) => stderr[at..]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(1500)
            .collect(),
        None => tail(&outcome.stderr, 800),
    };
    DepsError::Skill(format!(
        "{path}: pip could not fetch the requirements: {reason}"
    ))
}

fn tail(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let chars: Vec<char> = text.trim().chars().collect();
    chars[chars.len().saturating_sub(n)..].iter().collect()
}

/// Every file's SHA-256 is one of its requirement's `--hash` values, when the file gives
/// hashes (pip checks this too; this is the verifier's own check of what it attests).
fn check_hashes(requirements: &Requirements, files: &[FetchedFile]) -> Result<(), DepsError> {
    if !requirements.require_hashes {
        return Ok(());
    }
    for f in files {
        let allowed: Vec<&String> = requirements
            .items
            .iter()
            .filter(|r| r.normalized == f.dependency.name)
            .flat_map(|r| r.hashes.iter())
            .collect();
        let want = format!("sha256:{}", f.dependency.sha256);
        if !allowed.iter().any(|h| **h == want) {
            return Err(DepsError::Skill(format!(
                "{}: {} has sha256 {}, which no --hash for {} names",
                requirements.path, f.dependency.filename, f.dependency.sha256, f.dependency.name
            )));
        }
    }
    Ok(())
}

/// The name and version a distribution file's name gives (wheel or sdist).
pub fn parse_filename(file: &str) -> Option<(String, String)> {
    let (name, version) = if let Some(stem) = file.strip_suffix(".whl") {
        let parts: Vec<&str> = stem.split('-').collect();
        if !(parts.len() == 5 || parts.len() == 6) {
            return None;
        }
        (parts[0], parts[1])
    } else {
        let stem = file
            .strip_suffix(".tar.gz")
            .or_else(|| file.strip_suffix(".zip"))?;
        stem.rsplit_once('-')?
    };
    if name.is_empty() || version.is_empty() {
        return None;
    }
    Some((
        crate::package::requirements::normalize(name),
        version.to_string(),
    ))
}

/// Takes the driver's tar apart into `dir`: only the regular files the status line listed,
/// each with a distribution's file name and its listed length.
fn unpack(body: &[u8], listed: &[(String, u64)], dir: &Path) -> std::io::Result<Vec<FetchedFile>> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let mut archive = tar::Archive::new(body);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let Some((_, bytes)) = listed.iter().find(|(n, _)| *n == name) else {
            return Err(bad(format!("unlisted entry {name:?}")));
        };
        let valid = !name.contains('/')
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-!".contains(&b));
        if !valid
            || entry.header().entry_type() != tar::EntryType::Regular
            || entry.size() != *bytes
        {
            return Err(bad(format!("unexpected entry {name:?}")));
        }
        let Some((dist, version)) = parse_filename(&name) else {
            return Err(bad(format!("{name:?} is not a distribution's file name")));
        };
        let staged = dir.join(&name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staged)?;
        let mut hashing = crate::digest::HashingWriter::new(&mut file);
        let copied = std::io::copy(&mut (&mut entry).take(*bytes), &mut hashing)?;
        let (_, sha256, _) = hashing.finish();
        if copied != *bytes {
            return Err(bad(format!("{name:?} is shorter than listed")));
        }
        file.sync_all()?;
        out.push(FetchedFile {
            dependency: Dependency {
                ecosystem: "pypi".into(),
                name: dist,
                version,
                filename: name,
                sha256: sha256.to_hex(),
            },
            bytes: copied,
            staged,
        });
    }
    if out.len() != listed.len() {
        return Err(bad(format!(
            "{} files listed, {} received",
            listed.len(),
            out.len()
        )));
    }
    Ok(out)
}

/// A small tar of named files (normalised headers: mode 0644, mtime 0) at `path`.
pub fn write_tar(path: &Path, files: &[(&str, &[u8])]) -> std::io::Result<TreeTar> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    let mut builder = tar::Builder::new(crate::digest::HashingWriter::new(file));
    let mut footprint = 0u64;
    for (name, bytes) in files {
        let mut header = crate::package::read::emit::normal_header(
            crate::package::EntryKind::File,
            bytes.len() as u64,
            false,
        );
        builder.append_data(&mut header, name, *bytes)?;
        footprint += crate::package::file_footprint(bytes.len() as u64);
    }
    let (file, sha256, len) = builder.into_inner()?.finish();
    file.sync_all()?;
    Ok(TreeTar {
        path: path.to_path_buf(),
        sha256,
        len,
        footprint_bytes: footprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_give_name_and_version() {
        assert_eq!(
            parse_filename("six-1.16.0-py2.py3-none-any.whl"),
            Some(("six".into(), "1.16.0".into()))
        );
        assert_eq!(
            parse_filename("typing_extensions-4.12.2-py3-none-any.whl"),
            Some(("typing-extensions".into(), "4.12.2".into()))
        );
        assert_eq!(
            parse_filename("lxml-5.2.1-1-cp311-cp311-manylinux_2_28_x86_64.whl"),
            Some(("lxml".into(), "5.2.1".into()))
        );
        assert_eq!(
            parse_filename("Django-4.2.tar.gz"),
            Some(("django".into(), "4.2".into()))
        );
        assert_eq!(parse_filename("evil.sh"), None);
        assert_eq!(parse_filename("a-b.whl"), None);
    }

    #[test]
    fn the_tar_gives_only_listed_distribution_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut h, "six-1.16.0-py2.py3-none-any.whl", &b"abc"[..])
            .unwrap();
        let body = builder.into_inner().unwrap();
        let files = unpack(
            &body,
            &[("six-1.16.0-py2.py3-none-any.whl".into(), 3)],
            dir.path(),
        )
        .unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].dependency.name, "six");
        assert_eq!(
            files[0].dependency.sha256,
            crate::digest::Sha256Digest::of(b"abc").to_hex()
        );
        let other = tempfile::tempdir().unwrap();
        assert!(unpack(&body, &[], other.path()).is_err(), "unlisted");
        let third = tempfile::tempdir().unwrap();
        assert!(
            unpack(
                &body,
                &[("six-1.16.0-py2.py3-none-any.whl".into(), 4)],
                third.path()
            )
            .is_err(),
            "length differs from the listing"
        );
    }
}
