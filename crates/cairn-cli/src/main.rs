//! `cairn`: the Cairn command. `cairn serve` runs an HTTP node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use cairn_engine::EngineConfig;
use cairn_server::{router, AppState, ServerConfig};
use clap::{Parser, Subcommand, ValueEnum};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

#[derive(Parser)]
#[command(name = "cairn", version, about = "Cairn: an event store on object storage")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an HTTP node (defaults: local directory ./data, 127.0.0.1:7070).
    Serve(Serve),
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Parser)]
struct Serve {
    /// Where the stores live: a directory (or file:///path), or memory://
    /// (s3:// and az:// come with the cloud backends).
    #[arg(long, env = "CAIRN_STORAGE", default_value = "./data")]
    storage: String,
    /// Address to listen on.
    #[arg(long, env = "CAIRN_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Group commit: how long a store's writer waits for more appends (ms).
    #[arg(long, env = "CAIRN_LINGER_MS", default_value_t = 1)]
    linger_ms: u64,
    /// Group commit: a batch is committed once it holds this many bytes.
    #[arg(long, env = "CAIRN_MAX_BATCH_BYTES", default_value_t = 8 << 20)]
    max_batch_bytes: usize,
    /// Bytes of decoded blocks kept in memory.
    #[arg(long, env = "CAIRN_BLOCK_CACHE_BYTES", default_value_t = 256 << 20)]
    block_cache_bytes: u64,
    /// Bytes of footers and index pages kept in memory.
    #[arg(long, env = "CAIRN_META_CACHE_BYTES", default_value_t = 64 << 20)]
    meta_cache_bytes: u64,
    /// Request bodies over this many bytes get 413.
    #[arg(long, env = "CAIRN_BODY_LIMIT", default_value_t = 64 << 20)]
    body_limit: usize,
    /// Seconds until a response must have started (503 past it).
    #[arg(long, env = "CAIRN_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    request_timeout_secs: u64,
    /// Seconds an append may take to commit before 503 commit_outcome_unknown.
    #[arg(long, env = "CAIRN_COMMIT_TIMEOUT_SECS", default_value_t = 10)]
    commit_timeout_secs: u64,
    /// Long-polls and live tails held at once (429 past it).
    #[arg(long, env = "CAIRN_MAX_WAITERS", default_value_t = 10_000)]
    max_waiters: usize,
    /// Log format.
    #[arg(long, env = "CAIRN_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn open_storage(url: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    if url == "memory://" || url == "memory:" {
        return Ok(Arc::new(object_store::memory::InMemory::new()));
    }
    if url.starts_with("s3://") || url.starts_with("az://") || url.starts_with("azure://") || url.starts_with("gs://") {
        bail!("storage {url:?}: cloud backends are not built into this version yet; use a directory or memory://");
    }
    if url.contains("://") && !url.starts_with("file://") {
        bail!("storage {url:?}: unknown scheme (use a directory, file:///path or memory://)");
    }
    let dir = url.strip_prefix("file://").unwrap_or(url);
    // Acknowledged writes must survive a crash: fsync files and directories
    // (and conditional doc updates, which LocalFileSystem lacks).
    let fs = cairn_engine::local::LocalStore::new(dir).with_context(|| format!("cannot open {dir:?}"))?;
    Ok(Arc::new(fs))
}

/// Refuses a backend that does not honour create-if-absent: every commit
/// depends on it.
async fn probe_create_if_absent(store: &Arc<dyn ObjectStore>) -> anyhow::Result<()> {
    // At the top, not in a folder: nothing is left behind on local disk.
    let path = object_store::path::Path::from(format!("_cairn_probe_{}", std::process::id()));
    let opts = || PutOptions { mode: PutMode::Create, ..Default::default() };
    let _ = store.delete(&path).await;
    store.put_opts(&path, PutPayload::from_static(b"1"), opts()).await.context("the storage refused a first create-if-absent")?;
    match store.put_opts(&path, PutPayload::from_static(b"2"), opts()).await {
        Err(object_store::Error::AlreadyExists { .. }) => {}
        Ok(_) => bail!("the storage does not honour create-if-absent (a second create succeeded); refusing to start"),
        Err(e) => bail!("the storage failed the create-if-absent probe: {e}"),
    }
    let _ = store.delete(&path).await;
    Ok(())
}

async fn serve(a: Serve) -> anyhow::Result<()> {
    let storage = open_storage(&a.storage)?;
    probe_create_if_absent(&storage).await?;
    let cfg = EngineConfig {
        linger: Duration::from_millis(a.linger_ms),
        max_batch_bytes: a.max_batch_bytes,
        block_cache_bytes: a.block_cache_bytes,
        meta_cache_bytes: a.meta_cache_bytes,
        commit_timeout: Duration::from_secs(a.commit_timeout_secs),
        ..EngineConfig::default()
    };
    let metrics = Arc::new(cairn_server::metrics::Metrics::new());
    let engine = AppState::engine_with_metrics(storage, cfg, &metrics);
    let server = ServerConfig {
        body_limit: a.body_limit,
        request_timeout: Duration::from_secs(a.request_timeout_secs),
        max_waiters: a.max_waiters,
        ..ServerConfig::default()
    };
    let state = AppState::with_metrics(engine.clone(), server, metrics);
    let app = router(state.clone());
    let listener = tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    tracing::warn!("no --tokens file: the API is open to anyone who can reach {addr}");
    tracing::info!(%addr, storage = %a.storage, "cairn is serving");
    // Printed for scripts and tests that start on port 0.
    println!("listening on {addr}");
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing requests in flight");
            state.begin_shutdown();
        })
        .await?;
    tracing::info!("draining the writers");
    engine.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
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
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(a) => {
            let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| "info".into());
            match a.log_format {
                LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init(),
                LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init(),
            }
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(serve(a))
        }
    }
}
