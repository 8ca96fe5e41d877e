//! The network sink: the process that owns a test's network namespace.
//!
//! It runs in its own container (`skill-verifier sink`, from the image `images prepare`
//! builds), and the test container joins its network namespace (`NetworkMode:
//! container:<sink>`). Before it says it is ready it turns that namespace into a trap:
//!
//! - a route for every IPv4 destination (a veth pair in `observe`, the engine's bridge in
//!   `allowlist`), so a connect never fails early;
//! - nftables: every TCP and UDP packet from any user but the sink's own (root; the test
//!   never runs as root) to anything but loopback is marked, routed back into the namespace
//!   and TPROXYed to the sink's listeners, which see the original destination; everything
//!   else from the test (ICMP, IPv6 beyond loopback) is dropped.
//!
//! So every packet the test sends ends at the sink, including connects to literal IPs, and
//! no byte leaves: in `observe` the namespace has no interface to the outside at all. The
//! sink answers DNS for every name ([`dns`]), reads the first bytes of each TCP connection
//! ([`sniff`]: HTTP method, Host and path; TLS SNI), records UDP datagrams, and aggregates it
//! all under bounds ([`record`]). In `allowlist` mode, connections to allowed names are
//! forwarded ([`egress`]).
//!
//! Protocol with the runner, over the container's stdio: the sink prints [`READY`] once the
//! trap is set; the runner writes one [`Config`] line (the job's allowlist); when the runner
//! closes stdin, the sink prints one [`record::Report`] line and exits.
//!
//! Bounds: [`MAX_CONNECTIONS`] connections read at once (more are recorded, not read); at
//! most [`PEEK_BYTES`] read per connection within [`PEEK_TIMEOUT`] (a 10 MB header or a
//! slowloris costs no more); [`record::MAX_ENTRIES`] destinations per report.

pub mod dns;
pub mod egress;
pub mod record;
pub mod sniff;

use std::io::{BufRead, IoSliceMut, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{watch, Semaphore};

use record::{bounded, Observation, Protocol, Recorder};
use sniff::Sniffed;

/// The line the sink prints once its trap is set.
pub const READY: &str = "skill-verifier-sink ready";
/// Where TPROXY delivers TCP.
pub const TCP_PORT: u16 = 15001;
/// Where TPROXY delivers UDP.
pub const UDP_PORT: u16 = 15002;
/// Connections read at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Bytes read from a connection before it is classified.
pub const PEEK_BYTES: usize = 16 * 1024;
/// How long a connection may take to send its first bytes.
pub const PEEK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection may wait for the job's configuration.
const CONFIG_TIMEOUT: Duration = Duration::from_secs(5);
/// The packet mark of trapped traffic ("SV").
const MARK: u32 = 0x5356;
/// The routing table that makes every marked destination local.
const TABLE: u32 = 100;

/// The source of everything the sink runs, for the sink image's tag: a change here builds
/// a new image.
pub const SOURCES: &[&str] = &[
    include_str!("mod.rs"),
    include_str!("dns.rs"),
    include_str!("egress.rs"),
    include_str!("record.rs"),
    include_str!("sniff.rs"),
    include_str!("../netguard.rs"),
];

/// The sink image tag for these sources: `skill-verifier/sink:<12 hex>`.
pub fn image() -> String {
    let mut h = Sha256::new();
    for s in SOURCES {
        h.update(s.as_bytes());
    }
    h.update(crate::sandbox::images::BUILD_SCRIPT.as_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    format!("skill-verifier/sink:{}", &hex::encode(h.finalize())[..12])
}

/// The job's network settings, sent by the runner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Names (or `*.domain`) that are really reached; empty in `observe`.
    pub allow: Vec<String>,
    /// Whether an allowed name may resolve to a private, loopback or link-local address.
    pub allow_private: bool,
}

/// Runs the sink: `egress` when the namespace has a way out (allowlist mode).
pub fn main(egress: bool) -> ExitCode {
    if let Err(e) = trap(egress) {
        eprintln!("sink: {e}");
        return ExitCode::from(3);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sink: runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(serve(egress)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sink: {e}");
            ExitCode::from(3)
        }
    }
}

/// Sets the trap in this network namespace (needs CAP_NET_ADMIN).
fn trap(egress: bool) -> Result<(), String> {
    let mut steps: Vec<Vec<String>> = Vec::new();
    let ip = |args: &str| -> Vec<String> {
        std::iter::once("ip".to_string())
            .chain(args.split_whitespace().map(str::to_string))
            .collect()
    };
    if !egress {
        // No interface to the outside: a veth pair whose peer stays here gives every
        // destination a route (so connects reach the trap) and nowhere to go.
        steps.push(ip("link add sv0 type veth peer name sv1"));
        steps.push(ip("addr add 10.213.0.2/24 dev sv0"));
        steps.push(ip("link set sv1 up"));
        steps.push(ip("link set sv0 up"));
        steps.push(ip("route add default dev sv0"));
    }
    steps.push(ip(&format!("rule add fwmark {MARK} lookup {TABLE}")));
    steps.push(ip(&format!(
        "route add local 0.0.0.0/0 dev lo table {TABLE}"
    )));
    for step in steps {
        run(&step, None)?;
    }
    let ruleset = format!(
        "table inet skill_verifier_sink {{
  chain out {{
    type route hook output priority mangle; policy accept;
    meta skuid 0 accept
    ip daddr 127.0.0.0/8 accept
    ip6 daddr ::1 accept
    meta nfproto ipv4 meta l4proto {{ tcp, udp }} meta mark set {MARK} accept
    drop
  }}
  chain pre {{
    type filter hook prerouting priority mangle; policy accept;
    meta mark {MARK} meta l4proto tcp tproxy ip to :{TCP_PORT} accept
    meta mark {MARK} meta l4proto udp tproxy ip to :{UDP_PORT} accept
  }}
}}
"
    );
    run(&["nft".into(), "-f".into(), "-".into()], Some(&ruleset))
}

fn run(argv: &[String], stdin: Option<&str>) -> Result<(), String> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// What every task shares.
struct State {
    recorder: Recorder,
    names: dns::Names,
    config: watch::Receiver<Option<Config>>,
    egress: bool,
}

async fn serve(egress: bool) -> Result<(), String> {
    let tcp = transparent_tcp().map_err(|e| format!("tcp listener: {e}"))?;
    let udp = transparent_udp().map_err(|e| format!("udp socket: {e}"))?;
    let (config_tx, config_rx) = watch::channel(None);
    let state = Arc::new(State {
        recorder: Recorder::default(),
        names: dns::Names::default(),
        config: config_rx,
        egress,
    });
    tokio::spawn(tcp_loop(tcp, state.clone()));
    tokio::spawn(udp_loop(udp, state.clone()));
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{READY}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    // stdin: the config line, then EOF when the run is over.
    let (line_tx, mut line_rx) = tokio::sync::mpsc::channel::<String>(4);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if line_tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = line_rx.recv().await {
        match serde_json::from_str::<Config>(&line) {
            Ok(config) => {
                let _ = config_tx.send(Some(config));
            }
            Err(e) => eprintln!("sink: ignoring a bad config line: {e}"),
        }
    }
    let report = serde_json::to_string(&state.recorder.report()).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{report}").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())
}

fn transparent_tcp() -> std::io::Result<TcpListener> {
    use nix::sys::socket::{setsockopt, sockopt};
    let socket = tokio::net::TcpSocket::new_v4()?;
    setsockopt(&socket, sockopt::IpTransparent, &true).map_err(std::io::Error::from)?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, TCP_PORT)))?;
    socket.listen(1024)
}

fn transparent_udp() -> std::io::Result<UdpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, UDP_PORT))?;
    setsockopt(&socket, sockopt::IpTransparent, &true).map_err(std::io::Error::from)?;
    setsockopt(&socket, sockopt::Ipv4OrigDstAddr, &true).map_err(std::io::Error::from)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

async fn tcp_loop(listener: TcpListener, state: Arc<State>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(pair) => pair,
            // Out of descriptors under a connection flood: back off, keep serving.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // With TPROXY the local address is where the test meant to go.
        let Ok(SocketAddr::V4(dst)) = stream.local_addr() else {
            continue;
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let state = state.clone();
                tokio::spawn(async move {
                    handle_tcp(stream, dst, &state).await;
                    drop(permit);
                });
            }
            // Too many at once: recorded, not read.
            Err(_) => state
                .recorder
                .record(destination(Protocol::Tcp, dst, &state)),
        }
    }
}

/// An attempt to `dst`, with the name the sink handed out for it, if any.
fn destination(protocol: Protocol, dst: SocketAddrV4, state: &State) -> Observation {
    Observation {
        host: state.names.name_of(*dst.ip()),
        address: Some(dst.ip().to_string()),
        port: Some(dst.port()),
        ..Observation::new(protocol)
    }
}

async fn handle_tcp(mut stream: TcpStream, dst: SocketAddrV4, state: &State) {
    let mut buf = Vec::with_capacity(4096);
    let deadline = tokio::time::Instant::now() + PEEK_TIMEOUT;
    while buf.len() < PEEK_BYTES && sniff::needs_more(&buf) {
        let mut chunk = vec![0u8; PEEK_BYTES - buf.len()];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let sniffed = sniff::sniff(&buf);
    let mut o = destination(Protocol::Tcp, dst, state).with_payload(&buf);
    let asked = match &sniffed {
        Sniffed::Http { method, path, host } => {
            o.protocol = Protocol::Http;
            o.method = Some(bounded(method));
            o.path = Some(bounded(path));
            if let Some(h) = host {
                o.host = Some(bounded(&sniff::host_only(h)));
            }
            host.as_deref().map(sniff::host_only)
        }
        Sniffed::Tls { sni } => {
            o.protocol = Protocol::Tls;
            if let Some(name) = sni {
                o.host = Some(bounded(&name.to_ascii_lowercase()));
            }
            sni.clone()
        }
        Sniffed::Raw => None,
    };
    if state.egress {
        if let Some(host) = asked {
            if let Some(config) = config(state).await {
                if egress::allowed(&config.allow, &host) {
                    match egress::resolve(&host, dst.port(), config.allow_private).await {
                        Ok(address) => {
                            o.allowed = true;
                            state.recorder.record(o);
                            if let Err(e) = egress::forward(stream, &buf, &host, address).await {
                                eprintln!("sink: {e}");
                            }
                            return;
                        }
                        Err(e) => eprintln!("sink: {e}"),
                    }
                }
            }
        }
    }
    let http = o.protocol == Protocol::Http;
    state.recorder.record(o);
    if http {
        let body = "skill-verifier sink: this request was recorded and not forwarded\n";
        let reply = format!(
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(PEEK_TIMEOUT, stream.write_all(reply.as_bytes())).await;
    }
}

/// The job's config, once the runner has sent it (or `None` after a while without).
async fn config(state: &State) -> Option<Config> {
    let mut rx = state.config.clone();
    let got = tokio::time::timeout(CONFIG_TIMEOUT, rx.wait_for(Option::is_some)).await;
    match got {
        Ok(Ok(c)) => c.clone(),
        _ => None,
    }
}

async fn udp_loop(socket: UdpSocket, state: Arc<State>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let got = socket
            .async_io(tokio::io::Interest::READABLE, || {
                recv_with_dst(&socket, &mut buf)
            })
            .await;
        let Ok((len, src, Some(dst))) = got else {
            continue;
        };
        let data = &buf[..len];
        if dst.port() == 53 {
            if let Some(answered) = dns::answer(data, &state.names) {
                for o in answered.observed {
                    state.recorder.record(o);
                }
                if let (Some(reply), Some(src)) = (answered.reply, src) {
                    let _ = reply_from(dst, src, &reply);
                }
                continue;
            }
        }
        state
            .recorder
            .record(destination(Protocol::Udp, dst, &state).with_payload(data));
    }
}

/// One datagram: its length, its source, and the destination the test sent it to.
fn recv_with_dst(
    socket: &UdpSocket,
    buf: &mut [u8],
) -> std::io::Result<(usize, Option<SocketAddrV4>, Option<SocketAddrV4>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, SockaddrIn};
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(nix::libc::sockaddr_in);
    let msg = recvmsg::<SockaddrIn>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .map_err(std::io::Error::from)?;
    let mut dst = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::Ipv4OrigDstAddr(sa) = c {
                dst = Some(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
                    u16::from_be(sa.sin_port),
                ));
            }
        }
    }
    let src = msg.address.map(SocketAddrV4::from);
    Ok((msg.bytes, src, dst))
}

/// Sends `reply` to `to` from the address the query went to (a transparent socket), so the
/// resolver accepts it.
fn reply_from(from: SocketAddrV4, to: SocketAddrV4, reply: &[u8]) -> std::io::Result<()> {
    use nix::sys::socket::{
        bind, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockType,
        SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(std::io::Error::from)?;
    setsockopt(&fd, sockopt::IpTransparent, &true).map_err(std::io::Error::from)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(std::io::Error::from)?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(from)).map_err(std::io::Error::from)?;
    sendto(
        fd.as_raw_fd(),
        reply,
        &SockaddrIn::from(to),
        MsgFlags::empty(),
    )
    .map_err(std::io::Error::from)?;
    Ok(())
}
