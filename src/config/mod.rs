//! Typed settings (SPEC §2): TOML is parsed into `Raw*` structs that reject
//! unknown keys, then validated into [`Settings`], whose every field is
//! already checked — the rest of the code never re-validates configuration.
//!
//! Secrets are `SecretString`s: Debug prints `[REDACTED]`, so `check-config`
//! output and logs never carry them. Every secret key `x` may instead be given
//! as `x_env = "VAR"`.

mod describe;
mod lines;
mod providers;
mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::auth::AuthConfig;
use crate::mapping::{Mapping, Preset};
pub use describe::describe;
use raw::RawConfig;
pub use raw::{Dur, Size};
pub use validate::decode_whsec;
use validate::{parse_error, Validator};

/// A configuration problem, always naming the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // Not a `source` field: the message already carries the cause, and a
    // source would make `{:#}` print it twice.
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Parse(String),
    #[error("invalid config: {key}: {message}")]
    Invalid { key: String, message: String },
}

/// An enum as the config spells it (`adyen-hmac`, not `AdyenHmac`).
pub(crate) fn spelling<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

/// A duration as the config spells it: the largest of `d`, `h`, `m`, `s`,
/// `ms` that divides it (`"7d"`, `"90s"`, `"1500ms"`).
pub(crate) fn duration_spelling(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// `sync`: a 2xx means the request is fsynced; `async`: acked before fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Sync,
    Async,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub server: ServerSettings,
    pub log: LogSettings,
    pub storage: StorageSettings,
    pub retention: RetentionSettings,
    pub admin_tokens: Vec<SecretString>,
    pub ingress: IngressSettings,
    pub delivery: DeliverySettings,
    pub returns: ReturnSettings,
    pub providers: Vec<ProviderSettings>,
    pub merchants: Vec<MerchantSettings>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Base of `status_url` / `response_url`, without a trailing slash.
    /// None = `http://<the address actually bound>` (resolved at start-up).
    pub public_url: Option<String>,
    pub max_body_bytes: usize,
    pub shutdown_timeout: Duration,
    /// HTTP worker threads (default: number of CPUs).
    pub workers: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct StorageSettings {
    pub path: PathBuf,
    pub durability: Durability,
    /// Below this many free bytes on the store's filesystem ingest and
    /// `/readyz` answer 503 (0 turns the check off).
    pub min_free_space: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct RetentionSettings {
    pub task_results: Duration,
    pub dedupe_window: Duration,
    pub events: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

#[derive(Debug, Clone)]
pub struct IngressSettings {
    /// Applied per provider to authenticated requests: each provider has its own bucket.
    pub rate_limit: RateLimit,
    /// Applied per source address (after `trusted_proxies`), charged per
    /// failed authentication.
    pub unauthenticated_rate_limit: RateLimit,
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub struct DeliverySettings {
    pub timeout: Duration,
    pub retry_schedule: Vec<Duration>,
    pub max_in_flight: usize,
    pub per_endpoint_rate: RateLimit,
    pub per_endpoint_in_flight: usize,
    pub allow_private_targets: bool,
    pub https_only: bool,
    /// The most events one `POST /v1/endpoints/{id}/replay` re-enqueues.
    pub replay_max_events: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct ReturnSettings {
    pub wait_for_final: Duration,
}

/// What a provider gets back when its IPN is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// The JSON task document with this status (202 by default).
    Json { status: u16 },
    /// A fixed body, e.g. Adyen's `[accepted]`.
    Fixed {
        status: u16,
        body: String,
        content_type: String,
    },
}

#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub id: String,
    pub preset: Preset,
    /// Default merchant for its events (SPEC §3 rule 3).
    pub merchant_id: Option<String>,
    /// Merchants it may report for; never empty, contains `merchant_id`.
    pub merchants: Vec<String>,
    /// Empty = any address.
    pub allowed_ips: Vec<IpNet>,
    pub ack: Ack,
    pub reorder_window: Duration,
    pub auth: AuthConfig,
    pub mapping: Mapping,
}

#[derive(Debug, Clone)]
pub struct MerchantSettings {
    pub id: String,
    pub api_keys: Vec<SecretString>,
    /// ASCII-serialized origins, e.g. `https://shop.example.com`.
    pub allowed_return_origins: Vec<String>,
    pub default_site_url: Option<Url>,
    pub return_secret: Option<SecretString>,
    pub endpoints: Vec<EndpointSettings>,
}

#[derive(Debug, Clone)]
pub struct EndpointSettings {
    pub id: String,
    pub url: Url,
    pub secret: SecretString,
    pub events: Vec<String>,
    pub description: Option<String>,
    pub ordering: crate::store::Ordering,
}

impl MerchantSettings {
    /// Is this absolute URL's origin one the merchant allows as a return target?
    pub fn allows_return_to(&self, url: &Url) -> bool {
        let origin = url.origin().ascii_serialization();
        // Userinfo (`https://user@host`) is refused whatever the origin.
        url.username().is_empty()
            && url.password().is_none()
            && self.allowed_return_origins.contains(&origin)
    }
}

impl Settings {
    /// Read and validate a config file. `env` resolves `*_env` keys (pass
    /// `|k| std::env::var(k).ok()` in production).
    pub fn load(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Settings::parse(&text, path.parent().unwrap_or(Path::new(".")), env)
    }

    /// Parse and validate TOML text; relative `public_key_file`s resolve against `base_dir`.
    pub fn parse(
        text: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| parse_error(text, &e))?;
        let lines = lines::ItemLines::scan(text);
        Validator {
            env,
            base_dir,
            lines: &lines,
        }
        .settings(raw)
    }

    pub fn provider(&self, id: &str) -> Option<&ProviderSettings> {
        self.providers.iter().find(|p| p.id == id)
    }

    pub fn merchant(&self, id: &str) -> Option<&MerchantSettings> {
        self.merchants.iter().find(|m| m.id == id)
    }
}

impl ProviderSettings {
    /// May this provider report for merchant `m`?
    pub fn serves(&self, m: &str) -> bool {
        self.merchants.iter().any(|x| x == m)
    }
}
