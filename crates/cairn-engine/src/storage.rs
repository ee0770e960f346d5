//! Opening a backend from a storage URL: a directory (`./data`,
//! `file:///srv/cairn`), `memory://`, `s3://bucket/prefix` or
//! `az://container/prefix`; and the create-if-absent probe every node runs
//! before it serves.
//!
//! Cloud settings come from each cloud's own environment variables first
//! (`AWS_*`, `AZURE_*`, read by object_store's builders: access keys, session
//! tokens, web identity / IRSA, ECS and EKS container credentials, IMDS;
//! account keys, SAS, managed identity, workload identity), then from
//! [`StorageOptions`], which the command line fills from flags and `CAIRN_*`
//! variables.

use std::sync::{Arc, Once};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};

/// Settings for the cloud backends beyond what their environment says.
#[derive(Clone, Debug)]
pub struct StorageOptions {
    /// An S3-compatible endpoint (SeaweedFS, MinIO, R2, ...) or an Azure
    /// blob endpoint (for Azurite: `http://127.0.0.1:10000`).
    pub endpoint: Option<String>,
    /// The S3 region (default: `AWS_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// Allow plain-HTTP endpoints.
    pub allow_http: bool,
    /// S3: `https://bucket.host/key` instead of `https://host/bucket/key`.
    pub virtual_hosted_style: bool,
    /// Azure: the storage account (default: `AZURE_STORAGE_ACCOUNT_NAME`).
    pub azure_account: Option<String>,
    /// Azure: talk to the Azurite emulator (its well-known account and key,
    /// unless others are given).
    pub azure_emulator: bool,
    /// S3: the `~/.aws` profile whose credentials to use (with the `aws-sdk`
    /// feature: the AWS SDK's chain, which also reads `AWS_PROFILE`, SSO and
    /// `credential_process`).
    pub aws_profile: Option<String>,
    /// Any other object_store setting by its key (`aws_session_token`,
    /// `azure_storage_sas_key`, `aws_role_arn`, `timeout`, ...), applied last.
    pub extra: Vec<(String, String)>,
    /// A single storage request gives up after this long ...
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// ... and is retried (5xx, throttling, connection errors) at most this
    /// many times, with backoff, within `retry_timeout`.
    pub max_retries: usize,
    pub retry_timeout: Duration,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            endpoint: None,
            region: None,
            allow_http: false,
            virtual_hosted_style: false,
            azure_account: None,
            azure_emulator: false,
            aws_profile: None,
            extra: Vec::new(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            max_retries: 4,
            retry_timeout: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("storage {url:?}: {why}")]
    Url { url: String, why: String },
    #[error("storage {url:?}: {err}")]
    Backend { url: String, err: object_store::Error },
    #[error("storage {url:?}: cannot open the directory: {err}")]
    Dir { url: String, err: std::io::Error },
}

/// Where a storage URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Memory,
    Dir(std::path::PathBuf),
    S3 { bucket: String, prefix: String },
    Azure { container: String, prefix: String },
}

impl Location {
    pub fn parse(url: &str) -> Result<Location, String> {
        if url == "memory://" || url == "memory:" {
            return Ok(Location::Memory);
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            if url.is_empty() {
                return Err("empty storage location".into());
            }
            return Ok(Location::Dir(url.into()));
        };
        let split = |what: &str| -> Result<(String, String), String> {
            let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if name.is_empty() {
                return Err(format!("no {what} name (expected {scheme}://{what}/prefix)"));
            }
            if name.contains(['?', '#', '@']) || prefix.contains(['?', '#']) {
                return Err("query strings, fragments and user names are not part of a storage URL; use the settings".into());
            }
            let prefix = prefix.trim_matches('/');
            // object_store paths refuse empty, `.` and `..` parts.
            Path::parse(prefix).map_err(|e| format!("bad prefix {prefix:?}: {e}"))?;
            Ok((name.to_string(), prefix.to_string()))
        };
        match scheme {
            "file" => Ok(Location::Dir(rest.into())),
            "s3" | "s3a" => split("bucket").map(|(bucket, prefix)| Location::S3 { bucket, prefix }),
            "az" | "azure" | "abfs" => split("container").map(|(container, prefix)| Location::Azure { container, prefix }),
            other => Err(format!("unknown scheme {other:?} (use a directory, file://, memory://, s3:// or az://)")),
        }
    }
}

/// Installs ring as rustls' process-wide crypto provider (it builds with
/// nothing beyond cc, unlike aws-lc). TLS clients of this process (the cloud
/// backends', and any reqwest client) need it before they are built; it is
/// done on every [`open`], and is harmless to repeat.
pub fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Opens the backend a storage URL names.
pub fn open(url: &str, opts: &StorageOptions) -> Result<Arc<dyn ObjectStore>, OpenError> {
    install_crypto();
    let loc = Location::parse(url).map_err(|why| OpenError::Url { url: url.into(), why })?;
    let backend = |err| OpenError::Backend { url: url.into(), err };
    let client = ClientOptions::new()
        .with_allow_http(opts.allow_http)
        .with_timeout(opts.request_timeout)
        .with_connect_timeout(opts.connect_timeout)
        .with_pool_idle_timeout(Duration::from_secs(50));
    let retry = RetryConfig { max_retries: opts.max_retries, retry_timeout: opts.retry_timeout, ..RetryConfig::default() };
    let (store, prefix): (Arc<dyn ObjectStore>, String) = match loc {
        Location::Memory => return Ok(Arc::new(object_store::memory::InMemory::new())),
        Location::Dir(dir) => {
            // Acknowledged writes must survive a crash: fsync files and
            // directories (and conditional doc updates).
            let fs = crate::local::LocalStore::new(&dir).map_err(|err| OpenError::Dir { url: url.into(), err })?;
            return Ok(Arc::new(fs));
        }
        Location::S3 { bucket, prefix } => {
            let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket).with_client_options(client).with_retry(retry);
            if let Some(e) = &opts.endpoint {
                b = b.with_endpoint(e);
            }
            if let Some(r) = &opts.region {
                b = b.with_region(r);
            }
            if opts.virtual_hosted_style {
                b = b.with_virtual_hosted_style_request(true);
            }
            for (k, v) in &opts.extra {
                let key = k.parse().map_err(backend)?;
                b = b.with_config(key, v);
            }
            b = aws_sdk::apply(b, opts).map_err(|why| OpenError::Url { url: url.into(), why })?;
            (Arc::new(b.build().map_err(backend)?), prefix)
        }
        Location::Azure { container, prefix } => {
            let mut b = MicrosoftAzureBuilder::from_env().with_container_name(container).with_client_options(client).with_retry(retry);
            if let Some(a) = &opts.azure_account {
                b = b.with_account(a);
            }
            if opts.azure_emulator {
                b = b.with_use_emulator(true);
                if let Some(e) = &opts.endpoint {
                    // object_store takes Azurite's address from this variable only.
                    if std::env::var("AZURITE_BLOB_STORAGE_URL").ok().as_deref() != Some(e.as_str()) {
                        return Err(OpenError::Url {
                            url: url.into(),
                            why: format!("with the emulator, set AZURITE_BLOB_STORAGE_URL={e} instead of an endpoint"),
                        });
                    }
                }
            } else if let Some(e) = &opts.endpoint {
                b = b.with_endpoint(e.clone());
            }
            for (k, v) in &opts.extra {
                let key = k.parse().map_err(backend)?;
                b = b.with_config(key, v);
            }
            (Arc::new(b.build().map_err(backend)?), prefix)
        }
    };
    if prefix.is_empty() {
        Ok(store)
    } else {
        Ok(Arc::new(PrefixStore::new(store, prefix)))
    }
}

/// Without the `aws-sdk` feature, object_store's own chain (environment,
/// web identity, container credentials, IMDS) is all there is.
#[cfg(not(feature = "aws-sdk"))]
mod aws_sdk {
    use object_store::aws::AmazonS3Builder;

    pub fn apply(b: AmazonS3Builder, opts: &super::StorageOptions) -> Result<AmazonS3Builder, String> {
        match &opts.aws_profile {
            Some(p) => Err(format!("--aws-profile {p:?}: this cairn was built without the `aws-sdk` feature (cargo build --release -p cairn-cli --features aws-sdk); export the profile's keys instead: eval \"$(aws configure export-credentials --profile {p} --format env)\"")),
            None => Ok(b),
        }
    }
}

/// With the `aws-sdk` feature, the AWS SDK's credential chain (the order the
/// AWS CLI uses: environment, `~/.aws` profiles with SSO and
/// `credential_process`, web identity, containers, IMDS) signs S3 requests,
/// and a profile's region is used when none is set.
#[cfg(feature = "aws-sdk")]
mod aws_sdk {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use aws_config::profile::ProfileFileCredentialsProvider;
    use aws_config::provider_config::ProviderConfig;
    use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
    use aws_smithy_http_client::tls;
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredential};

    /// The SDK's chain as an object_store credential provider, cached until
    /// five minutes before the credentials expire.
    #[derive(Debug)]
    pub struct SdkCredentials {
        chain: SharedCredentialsProvider,
        cached: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
    }

    impl SdkCredentials {
        pub fn new(chain: SharedCredentialsProvider) -> Self {
            SdkCredentials { chain, cached: tokio::sync::Mutex::new(None) }
        }
    }

    #[async_trait::async_trait]
    impl object_store::CredentialProvider for SdkCredentials {
        type Credential = AwsCredential;

        async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
            let mut cached = self.cached.lock().await;
            if let Some((c, expiry)) = cached.as_ref() {
                if expiry.is_none_or(|e| SystemTime::now() + Duration::from_secs(300) < e) {
                    return Ok(c.clone());
                }
            }
            let fresh = self.chain.provide_credentials().await.map_err(|e| object_store::Error::Generic { store: "S3", source: Box::new(e) })?;
            let c = Arc::new(AwsCredential {
                key_id: fresh.access_key_id().to_string(),
                secret_key: fresh.secret_access_key().to_string(),
                token: fresh.session_token().map(str::to_string),
            });
            *cached = Some((c.clone(), fresh.expiry()));
            Ok(c)
        }
    }

    /// Loads the SDK's configuration on a thread of its own (it is async;
    /// `open` is not, and may be called on a runtime's thread).
    /// With a profile named, its credentials alone (not whatever the
    /// environment holds, as the AWS CLI's `--profile`).
    fn load(profile: Option<String>) -> Result<(aws_config::SdkConfig, Option<SharedCredentialsProvider>), String> {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let http = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring)).build_https();
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http.clone());
                if let Some(p) = &profile {
                    loader = loader.profile_name(p);
                }
                let cfg = loader.load().await;
                let only = profile.map(|p| {
                    let pc = ProviderConfig::without_region().with_http_client(http);
                    let pc = match cfg.sleep_impl() {
                        Some(s) => pc.with_sleep_impl(s),
                        None => pc,
                    };
                    SharedCredentialsProvider::new(ProfileFileCredentialsProvider::builder().configure(&pc).profile_name(p).build())
                });
                Ok((cfg, only))
            })
        })
        .join()
        .map_err(|_| "loading the AWS configuration failed".to_string())?
    }

    pub fn apply(b: AmazonS3Builder, opts: &super::StorageOptions) -> Result<AmazonS3Builder, String> {
        // Keys given as settings win, as they do without the SDK.
        if b.get_config_value(&AmazonS3ConfigKey::AccessKeyId).is_some() && opts.aws_profile.is_none() {
            return Ok(b);
        }
        let (cfg, only) = load(opts.aws_profile.clone())?;
        let Some(chain) = only.or_else(|| cfg.credentials_provider()) else { return Ok(b) };
        let mut b = b;
        if opts.region.is_none() && b.get_config_value(&AmazonS3ConfigKey::Region).is_none() {
            if let Some(r) = cfg.region() {
                b = b.with_region(r.as_ref());
            }
        }
        Ok(b.with_credentials(Arc::new(SdkCredentials::new(chain))))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("the storage refused a create-if-absent: {0}")]
    Refused(object_store::Error),
    #[error("the storage does not honour create-if-absent (a second create of one object succeeded); commits would be unsafe, so Cairn will not use it")]
    NotHonoured,
    #[error("the storage failed the create-if-absent probe: {0}")]
    Failed(object_store::Error),
}

/// Writes a probe object twice with create-if-absent: the second write must
/// be refused. Every commit depends on it, so a backend that lets both land
/// is unusable. The probe is deleted afterwards.
pub async fn probe_create_if_absent(store: &dyn ObjectStore) -> Result<(), ProbeError> {
    // At the top, not in a folder, so nothing is left behind on local disk;
    // named so that no store name can collide with it.
    let path = Path::from(format!("_cairn_probe_{}", ulid::Ulid::generate()));
    let opts = || PutOptions { mode: PutMode::Create, ..Default::default() };
    store.put_opts(&path, PutPayload::from_static(b"1"), opts()).await.map_err(ProbeError::Refused)?;
    let second = store.put_opts(&path, PutPayload::from_static(b"2"), opts()).await;
    let _ = store.delete(&path).await;
    match second {
        Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
        Ok(_) => Err(ProbeError::NotHonoured),
        Err(e) => Err(ProbeError::Failed(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(Location::parse("memory://"), Ok(Location::Memory));
        assert_eq!(Location::parse("./data"), Ok(Location::Dir("./data".into())));
        assert_eq!(Location::parse("file:///srv/cairn"), Ok(Location::Dir("/srv/cairn".into())));
        assert_eq!(Location::parse("s3://b"), Ok(Location::S3 { bucket: "b".into(), prefix: "".into() }));
        assert_eq!(Location::parse("s3://b/x/y/"), Ok(Location::S3 { bucket: "b".into(), prefix: "x/y".into() }));
        assert_eq!(Location::parse("az://c/p"), Ok(Location::Azure { container: "c".into(), prefix: "p".into() }));
        assert!(Location::parse("s3://").is_err());
        assert!(Location::parse("s3:///p").is_err());
        assert!(Location::parse("s3://b/../x").is_err());
        assert!(Location::parse("s3://b/x?y=1").is_err());
        assert!(Location::parse("gs://b").is_err());
        assert!(Location::parse("").is_err());
    }

    #[tokio::test]
    async fn probe_passes_on_memory_and_leaves_nothing() {
        use futures::TryStreamExt;
        let s = object_store::memory::InMemory::new();
        probe_create_if_absent(&s).await.unwrap();
        assert!(s.list(None).try_collect::<Vec<_>>().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn probe_refuses_a_backend_without_create_if_absent() {
        use crate::testing::{FaultStore, Faults};
        let s = FaultStore::new(Arc::new(object_store::memory::InMemory::new()), 1);
        s.set(Faults { ignore_create: true, ..Faults::default() });
        assert!(matches!(probe_create_if_absent(s.as_ref()).await, Err(ProbeError::NotHonoured)));
        s.set(Faults { error: 1.0, ..Faults::default() });
        assert!(matches!(probe_create_if_absent(s.as_ref()).await, Err(ProbeError::Refused(_))));
    }
}
