//! The TOML as written: every table rejects unknown keys; values are only
//! shaped here, and checked in `validate`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{Durability, LogFormat};
use crate::auth::{Algorithm, Encoding, Scheme};
use crate::mapping::{Preset, RawMapping};

/// A duration written as a string: "500ms", "5s", "10m", "24h", "7d".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

/// A size written as a string: "64KiB", "256MiB", "1GiB", "512B" (also
/// KB/MB/GB as powers of ten, and a bare integer of bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    pub fn parse(s: &str) -> Result<Size, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?}: expected e.g. \"256MiB\""))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            u => return Err(format!("invalid size {s:?}: unknown unit {u:?}")),
        };
        n.checked_mul(mult)
            .map(Size)
            .ok_or_else(|| format!("invalid size {s:?}: too large"))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            S(String),
            N(u64),
        }
        match Text::deserialize(d)? {
            Text::S(s) => Size::parse(&s).map_err(serde::de::Error::custom),
            Text::N(n) => Ok(Size(n)),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) storage: RawStorage,
    #[serde(default)]
    pub(super) retention: RawRetention,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) ingress: RawIngress,
    #[serde(default)]
    pub(super) delivery: RawDelivery,
    #[serde(default)]
    pub(super) returns: RawReturns,
    #[serde(default)]
    pub(super) providers: Vec<RawProvider>,
    #[serde(default)]
    pub(super) merchants: Vec<RawMerchant>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<String>,
    pub(super) public_url: Option<String>,
    pub(super) max_body_bytes: Option<usize>,
    pub(super) shutdown_timeout: Option<Dur>,
    pub(super) workers: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<LogFormat>,
    pub(super) level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub(super) path: Option<PathBuf>,
    pub(super) durability: Option<Durability>,
    pub(super) min_free_space: Option<Size>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    pub(super) task_results: Option<Dur>,
    pub(super) dedupe_window: Option<Dur>,
    pub(super) events: Option<Dur>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) tokens: Option<Vec<String>>,
    pub(super) tokens_env: Option<OneOrMany>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIngress {
    pub(super) rate_limit: Option<RawRate>,
    pub(super) unauthenticated_rate_limit: Option<RawRate>,
    pub(super) trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRate {
    pub(super) per_second: u32,
    pub(super) burst: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    pub(super) timeout: Option<Dur>,
    pub(super) retry_schedule: Option<Vec<Dur>>,
    pub(super) max_in_flight: Option<usize>,
    pub(super) per_endpoint: Option<RawPerEndpoint>,
    pub(super) allow_private_targets: Option<bool>,
    pub(super) https_only: Option<bool>,
    pub(super) replay_max_events: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPerEndpoint {
    pub(super) per_second: u32,
    pub(super) burst: u32,
    pub(super) max_in_flight: usize,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReturns {
    pub(super) wait_for_final: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    pub(super) id: String,
    #[serde(default)]
    pub(super) preset: Preset,
    pub(super) merchant_id: Option<String>,
    pub(super) merchants: Option<Vec<String>>,
    #[serde(default)]
    pub(super) allowed_ips: Vec<String>,
    pub(super) ack: Option<RawAck>,
    pub(super) reorder_window: Option<Dur>,
    #[serde(default)]
    pub(super) auth: RawAuth,
    #[serde(default)]
    pub(super) mapping: RawMapping,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAck {
    pub(super) status: u16,
    pub(super) body: Option<String>,
    pub(super) content_type: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) scheme: Option<Scheme>,
    pub(super) algorithm: Option<Algorithm>,
    pub(super) header: Option<String>,
    pub(super) encoding: Option<Encoding>,
    pub(super) prefix: Option<String>,
    pub(super) secrets: Option<Vec<String>>,
    pub(super) secrets_env: Option<OneOrMany>,
    pub(super) tolerance: Option<Dur>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) public_key: Option<String>,
    pub(super) public_key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMerchant {
    pub(super) id: String,
    pub(super) api_keys: Option<Vec<String>>,
    pub(super) api_keys_env: Option<OneOrMany>,
    #[serde(default)]
    pub(super) allowed_return_origins: Vec<String>,
    pub(super) default_site_url: Option<String>,
    pub(super) return_secret: Option<String>,
    pub(super) return_secret_env: Option<String>,
    #[serde(default)]
    pub(super) endpoints: Vec<RawEndpoint>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEndpoint {
    pub(super) id: String,
    pub(super) url: String,
    pub(super) secret: Option<String>,
    pub(super) secret_env: Option<String>,
    pub(super) events: Option<Vec<String>>,
    pub(super) description: Option<String>,
    pub(super) ordering: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::Size;

    #[test]
    fn sizes_parse_like_the_spec_writes_them() {
        assert_eq!(Size::parse("256MiB"), Ok(Size(256 << 20)));
        assert_eq!(Size::parse("64KiB"), Ok(Size(64 << 10)));
        assert_eq!(Size::parse(" 1GiB "), Ok(Size(1 << 30)));
        assert_eq!(Size::parse("10MB"), Ok(Size(10_000_000)));
        assert_eq!(Size::parse("0"), Ok(Size(0)));
        assert_eq!(Size::parse("512B"), Ok(Size(512)));
        for bad in ["", "MiB", "12 parsecs", "-1MiB", "1.5GiB", "99999999999TiB"] {
            assert!(Size::parse(bad).is_err(), "{bad:?}");
        }
    }
}
