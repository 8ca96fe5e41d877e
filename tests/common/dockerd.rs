//! A second Docker engine for tests: `dockerd` on a loopback TCP port with mutual TLS, its
//! certificates made by the test with `openssl` (a CA, a server certificate for
//! 127.0.0.1, a client certificate), plus a rogue CA and a client certificate from it.
//!
//! It keeps out of the host engine's way: its own data root (vfs storage: runner images
//! here are small), exec root, pid file, cgroup parent and an empty config file (the host's
//! /etc/docker/daemon.json is not read); its containers attach to its own bridge `svtls0`
//! (never `--bridge=none`, which removes the host's docker0), and it adds no iptables rules.
//! Dropping it stops dockerd (SIGTERM, then SIGKILL) and removes its folders.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skill_verifier::package::Runtime;
use skill_verifier::sandbox::engines::TlsFiles;
use skill_verifier::sandbox::images::{default_image, prepare, PrepareOptions};
use skill_verifier::sandbox::{DockerRunner, EngineTarget, ImageMap, Runner};

/// The bridge the test engines attach containers to.
const BRIDGE: &str = "svtls0";

/// A running TLS engine.
pub struct TlsDockerd {
    /// `tcp://127.0.0.1:<port>`.
    pub host: String,
    /// ca.pem, cert.pem and key.pem of a client the engine accepts.
    pub client: PathBuf,
    /// A client whose certificate comes from another CA (trusting the right server CA).
    pub rogue_client: PathBuf,
    /// A client with the right certificate that trusts another CA for the server.
    pub wrong_ca_client: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("running sh");
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes the certificates in `dir`: `ca/`, `server/`, `client/`, `rogue/`, `wrong-ca/`.
fn certificates(dir: &Path) {
    sh(
        dir,
        r#"
mkdir -p ca rogueca server client rogue wrong-ca
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() { # dir subject
  key "$1/ca-key.pem"
  openssl req -x509 -new -key "$1/ca-key.pem" -subj "/CN=$2" -days 2 -out "$1/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
leaf() { # cadir outdir cn ext
  key "$2/key.pem"
  openssl req -new -key "$2/key.pem" -subj "/CN=$3" -out "$2/req.csr"
  printf '%s\n' "$4" > "$2/ext.cnf"
  openssl x509 -req -in "$2/req.csr" -CA "$1/ca.pem" -CAkey "$1/ca-key.pem" \
    -CAcreateserial -days 2 -extfile "$2/ext.cnf" -out "$2/cert.pem" 2>/dev/null
}
ca ca "skill-verifier test CA"
ca rogueca "rogue CA"
leaf ca server 127.0.0.1 "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
leaf ca client skill-verifier "extendedKeyUsage=clientAuth"
leaf rogueca rogue rogue-client "extendedKeyUsage=clientAuth"
# client: the accepted certificate, trusting the real CA.
cp ca/ca.pem client/ca.pem
# rogue: trusts the real server, but its certificate comes from the rogue CA.
cp ca/ca.pem rogue/ca.pem
# wrong-ca: the accepted certificate, but it trusts the rogue CA for the server.
cp client/cert.pem client/key.pem wrong-ca/
cp rogueca/ca.pem wrong-ca/ca.pem
"#,
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TlsDockerd {
    /// Starts the engine and waits (up to 60 s) until our client's ping answers. Panics,
    /// with dockerd's log, when it does not come up. The free port is picked before dockerd
    /// binds it, so another process can take it meanwhile (an outgoing connection's source
    /// port, say): dockerd then exits on "address already in use", and it is started again on
    /// another port, up to three times.
    pub async fn start() -> Self {
        let mut attempt = 1;
        loop {
            match Self::try_start().await {
                Ok(engine) => return engine,
                Err(log) if log.contains("address already in use") && attempt < 3 => {
                    eprintln!("the TLS dockerd lost its port; starting it again");
                    attempt += 1;
                }
                Err(log) => panic!("the TLS dockerd did not come up; its log:\n{log}"),
            }
        }
    }

    /// One start: the engine, or dockerd's log when it exits or stays silent for 60 s.
    async fn try_start() -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("sv-dockerd-")
            .tempdir_in("/var/tmp")
            .unwrap();
        certificates(dir.path());
        // Our own bridge, made once (idempotent across test processes).
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ip link show {BRIDGE} >/dev/null 2>&1 || {{ ip link add {BRIDGE} type bridge && \
                 ip addr add 172.31.250.1/24 dev {BRIDGE} && ip link set {BRIDGE} up; }}"
            ))
            .status();
        let port = free_port();
        let host = format!("tcp://127.0.0.1:{port}");
        let d = dir.path();
        std::fs::write(d.join("daemon.json"), "{}").unwrap();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--host")
            .arg(&host)
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(d.join("ca/ca.pem"))
            .arg("--tlscert")
            .arg(d.join("server/cert.pem"))
            .arg("--tlskey")
            .arg(d.join("server/key.pem"))
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("--storage-driver=vfs")
            .arg(format!("--bridge={BRIDGE}"))
            .arg("--iptables=false")
            .arg("--ip-masq=false")
            .arg("--userland-proxy=false")
            .arg(format!("--cgroup-parent=/sv-tls-{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        let mut engine = Self {
            host,
            client: d.join("client"),
            rogue_client: d.join("rogue"),
            wrong_ca_client: d.join("wrong-ca"),
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(runner) = DockerRunner::connect_to(engine.target("tls", 2)).await {
                if runner.ping().await.is_ok() {
                    return Ok(engine);
                }
            }
            let exited = engine
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || Instant::now() > deadline {
                // Dropping the engine stops dockerd (if it still runs) and removes its dir.
                return Err(engine.log());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The engine as our client reaches it, with the accepted client certificate.
    pub fn target(&self, name: &str, capacity: usize) -> EngineTarget {
        self.target_with(name, capacity, &self.client)
    }

    /// The engine reached with the certificate files in `certs`.
    pub fn target_with(&self, name: &str, capacity: usize, certs: &Path) -> EngineTarget {
        EngineTarget {
            name: name.into(),
            host: self.host.clone(),
            tls: Some(TlsFiles::in_dir(certs)),
            capacity,
        }
    }

    /// Builds the shell runner image on this engine with the recipe, as `images prepare`
    /// does for every engine; returns our connected runner.
    pub async fn prepare_shell_image(&self) -> DockerRunner {
        let runner = DockerRunner::connect_to(self.target("remote", 1))
            .await
            .unwrap();
        let image = default_image(Runtime::Shell);
        let images: ImageMap = [(Runtime::Shell, image)].into();
        let mut progress = |line: &str| eprintln!("images[remote]: {line}");
        let options = PrepareOptions {
            no_pull: true,
            force_build: false,
        };
        prepare(&runner, &images, options, &mut progress)
            .await
            .expect("the shell image builds on the TLS engine");
        runner
    }

    /// dockerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Stops dockerd now (SIGKILL) and waits for it: the engine becomes unreachable.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TlsDockerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: dockerd stops its containers and its containerd; then SIGKILL.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // A killed dockerd leaves its containerd (and shims) behind: stop what runs from
        // this engine's exec root, then unmount what is left under its folder.
        let d = self.dir.path().display().to_string();
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                // `exe[c]`: the pattern must not match this shell's own command line.
                "pkill -KILL -f '{d}/exe[c]' ; sleep 0.5; \
                 grep -o ' {d}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null; true"
            ))
            .status();
    }
}
