//! `cairn serve`: an HTTP node over a storage URL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cairn_engine::storage::{self, StorageOptions};
use cairn_engine::EngineConfig;
use cairn_server::{router, AppState, ServerConfig};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Cloud storage settings (each also read from its CAIRN_* variable).
#[derive(clap::Args)]
#[command(next_help_heading = "Cloud storage")]
pub struct Cloud {
    /// S3-compatible endpoint (MinIO, SeaweedFS, R2, ...; path-style by
    /// default), or an Azure blob endpoint.
    #[arg(long, env = "CAIRN_STORAGE_ENDPOINT")]
    storage_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION or AWS_DEFAULT_REGION, else us-east-1).
    #[arg(long, env = "CAIRN_STORAGE_REGION")]
    storage_region: Option<String>,
    /// Allow a plain-HTTP endpoint.
    #[arg(long, env = "CAIRN_STORAGE_ALLOW_HTTP")]
    storage_allow_http: bool,
    /// S3: virtual-hosted-style requests (https://bucket.endpoint/key).
    #[arg(long, env = "CAIRN_S3_VIRTUAL_HOSTED_STYLE")]
    s3_virtual_hosted_style: bool,
    /// S3: credentials of this ~/.aws profile (SSO and credential_process
    /// included). Needs a cairn built with `--features aws-sdk`, which also
    /// reads AWS_PROFILE and profile regions.
    #[arg(long, env = "CAIRN_AWS_PROFILE")]
    aws_profile: Option<String>,
    /// Azure storage account (default: AZURE_STORAGE_ACCOUNT_NAME).
    #[arg(long, env = "CAIRN_AZURE_ACCOUNT")]
    azure_account: Option<String>,
    /// Use the Azurite emulator (its address from AZURITE_BLOB_STORAGE_URL,
    /// default http://127.0.0.1:10000).
    #[arg(long, env = "CAIRN_AZURE_EMULATOR")]
    azure_emulator: bool,
    /// Any object_store setting, KEY=VALUE, repeatable or comma-separated:
    /// aws_role_arn, aws_session_token, azure_storage_sas_key,
    /// azure_federated_token_file, ... Prefer the AWS_*/AZURE_* variables
    /// for secrets: flags show up in process listings.
    #[arg(long, env = "CAIRN_STORAGE_OPTIONS", value_delimiter = ',', value_parser = key_value)]
    storage_option: Vec<(String, String)>,
    /// Seconds a single storage request may take before it is retried.
    #[arg(long, env = "CAIRN_STORAGE_TIMEOUT_SECS", default_value_t = 30)]
    storage_timeout_secs: u64,
    /// Retries of a failed storage request (5xx, throttling, resets).
    #[arg(long, env = "CAIRN_STORAGE_RETRIES", default_value_t = 4)]
    storage_retries: usize,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_ascii_lowercase(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

impl Cloud {
    pub fn options(&self) -> StorageOptions {
        StorageOptions {
            endpoint: self.storage_endpoint.clone(),
            region: self.storage_region.clone(),
            allow_http: self.storage_allow_http,
            virtual_hosted_style: self.s3_virtual_hosted_style,
            azure_account: self.azure_account.clone(),
            azure_emulator: self.azure_emulator,
            aws_profile: self.aws_profile.clone(),
            extra: self.storage_option.clone(),
            request_timeout: Duration::from_secs(self.storage_timeout_secs),
            max_retries: self.storage_retries,
            ..StorageOptions::default()
        }
    }
}

#[derive(Parser)]
pub struct Serve {
    /// Where the stores live: a directory (or file:///path), s3://bucket/prefix,
    /// az://container/prefix, or memory:// (lost on exit). Cloud credentials
    /// come from the usual AWS_* and AZURE_* variables (see docs/OPERATIONS.md).
    #[arg(long, env = "CAIRN_STORAGE", default_value = "./data")]
    storage: String,
    #[command(flatten)]
    cloud: Cloud,
    /// Address to listen on.
    #[arg(long, env = "CAIRN_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Group commit: how long a store's writer waits for more appends (ms), when its last commit held more than one request.
    #[arg(long, env = "CAIRN_LINGER_MS", default_value_t = 1)]
    linger_ms: u64,
    /// Group commit: a batch is committed once it holds this many bytes.
    #[arg(long, env = "CAIRN_MAX_BATCH_BYTES", default_value_t = 8 << 20)]
    max_batch_bytes: usize,
    /// Bytes of decoded blocks kept in memory.
    #[arg(long, env = "CAIRN_BLOCK_CACHE_BYTES", default_value_t = 256 << 20)]
    block_cache_bytes: u64,
    /// Bytes of footers and index pages kept in memory (5/8 of it for the
    /// footers of recent segments, which every stream read and head
    /// look-up consults).
    #[arg(long, env = "CAIRN_META_CACHE_BYTES", default_value_t = 256 << 20)]
    meta_cache_bytes: u64,
    /// Request bodies over this many bytes get 413.
    #[arg(long, env = "CAIRN_BODY_LIMIT", default_value_t = 64 << 20)]
    body_limit: usize,
    /// An event's data over this many bytes gets 413 event_too_large.
    #[arg(long, env = "CAIRN_MAX_EVENT_BYTES", default_value_t = 16 << 20)]
    max_event_bytes: usize,
    /// Seconds until a response must have started (503 past it).
    #[arg(long, env = "CAIRN_REQUEST_TIMEOUT_SECS", default_value_t = 60)]
    request_timeout_secs: u64,
    /// Seconds an append may take to commit before 503 commit_outcome_unknown.
    #[arg(long, env = "CAIRN_COMMIT_TIMEOUT_SECS", default_value_t = 10)]
    commit_timeout_secs: u64,
    /// Seconds a client has to send a request's headers (slow clients are
    /// cut off).
    #[arg(long, env = "CAIRN_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    header_timeout_secs: u64,
    /// Open connections at most; more wait until one closes.
    #[arg(long, env = "CAIRN_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Long-polls and live tails held at once (429 past it).
    #[arg(long, env = "CAIRN_MAX_WAITERS", default_value_t = 10_000)]
    max_waiters: usize,
    /// How often a node looks for commits of other nodes while someone
    /// long-polls or tails a store (ms). Nobody waiting: no polling.
    #[arg(long, env = "CAIRN_POLL_INTERVAL_MS", default_value_t = 200)]
    poll_interval_ms: u64,
    /// Bearer tokens: a JSON file of SHA-256 hashes scoped to stores and
    /// rights (docs/SECURITY.md). Reloaded on SIGHUP. Without it the API is
    /// open to anyone who can reach the node.
    #[arg(long, env = "CAIRN_TOKENS")]
    tokens: Option<std::path::PathBuf>,
    /// With --tokens: serve /metrics without a token too.
    #[arg(long, env = "CAIRN_METRICS_PUBLIC")]
    metrics_public: bool,
    /// Serve HTTPS: the certificate chain (PEM), leaf first. Needs
    /// --tls-key. Both files are read again on SIGHUP.
    #[arg(long, env = "CAIRN_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "CAIRN_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Do not serve the web console at /.
    #[arg(long, env = "CAIRN_NO_CONSOLE")]
    no_console: bool,
    /// Log format.
    #[arg(long, env = "CAIRN_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

pub async fn serve(a: Serve) -> anyhow::Result<()> {
    let storage = storage::open(&a.storage, &a.cloud.options())?;
    storage::probe_create_if_absent(storage.as_ref()).await.with_context(|| format!("storage {:?}", a.storage))?;
    let cfg = EngineConfig {
        linger: Duration::from_millis(a.linger_ms),
        max_batch_bytes: a.max_batch_bytes,
        block_cache_bytes: a.block_cache_bytes,
        meta_cache_bytes: a.meta_cache_bytes,
        commit_timeout: Duration::from_secs(a.commit_timeout_secs),
        poll_interval: Duration::from_millis(a.poll_interval_ms.max(1)),
        ..EngineConfig::default()
    };
    let metrics = Arc::new(cairn_server::metrics::Metrics::new());
    let engine = AppState::engine_with_metrics(storage, cfg, &metrics);
    let server = ServerConfig {
        body_limit: a.body_limit,
        max_event_bytes: a.max_event_bytes,
        request_timeout: Duration::from_secs(a.request_timeout_secs),
        max_waiters: a.max_waiters,
        console: !a.no_console,
        ..ServerConfig::default()
    };
    let mut state = AppState::with_metrics(engine.clone(), server, metrics);
    let mut auth = None;
    if let Some(path) = &a.tokens {
        let a = Arc::new(cairn_server::auth::Auth::load(path, a.metrics_public).map_err(anyhow::Error::msg)?);
        tracing::info!(tokens = a.current().len(), file = %path.display(), "tokens loaded; SIGHUP reloads them");
        state = state.with_auth(a.clone());
        auth = Some(a);
    }
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(cairn_server::tls::Tls::load(cert, key).map_err(anyhow::Error::msg)?)),
        _ => None,
    };
    reload_on_hangup(auth, tls.clone());
    let app = router(state.clone());
    let listener = tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    if a.tokens.is_none() {
        tracing::warn!("no --tokens file: the API is open to anyone who can reach {addr}");
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, storage = %a.storage, tls = tls.is_some(), "cairn is serving");
    if !a.no_console {
        tracing::info!("web console at {scheme}://{addr}/");
    }
    // Printed for scripts and tests that start on port 0.
    println!("listening on {addr}");
    let limits = cairn_server::ConnLimits { header_read_timeout: Duration::from_secs(a.header_timeout_secs.max(1)), max_connections: a.max_connections, tls };
    cairn_server::serve(listener, app, limits, async move {
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

/// Reads the tokens file and the TLS pair again on every SIGHUP; what does
/// not load keeps what is in force.
fn reload_on_hangup(auth: Option<Arc<cairn_server::auth::Auth>>, tls: Option<Arc<cairn_server::tls::Tls>>) {
    if auth.is_none() && tls.is_none() {
        return;
    }
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            if let Some(auth) = &auth {
                match auth.reload() {
                    Ok(n) => tracing::info!(tokens = n, "tokens reloaded"),
                    Err(e) => tracing::error!(error = %e, "tokens not reloaded; the previous ones stay in force"),
                }
            }
            if let Some(tls) = &tls {
                match tls.reload() {
                    Ok(()) => tracing::info!("TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays in force"),
                }
            }
        }
    });
    #[cfg(not(unix))]
    let _ = (auth, tls);
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

