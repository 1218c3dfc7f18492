//! From the raw TOML to [`Settings`]: defaults, cross-field checks, `*_env`
//! secrets. Every error names its key; an error inside a `[[providers]]`,
//! `[[merchants]]` or `[[merchants.endpoints]]` table names the item by id
//! and the line of its header (`providers "stripe" (line 40) auth.secrets`),
//! and enums and durations appear as the config spells them.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::lines::ItemLines;
use super::raw::*;
use super::*;

pub(super) struct Validator<'a> {
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) base_dir: &'a Path,
    pub(super) lines: &'a ItemLines,
}

impl Validator<'_> {
    pub(super) fn settings(&self, raw: RawConfig) -> Result<Settings, ConfigError> {
        let server = self.server(raw.server)?;
        let level = raw.log.level.unwrap_or_else(|| "info".into());
        tracing_subscriber::EnvFilter::try_new(&level)
            .map_err(|e| invalid("log.level", e.to_string()))?;
        let log = LogSettings {
            format: raw.log.format.unwrap_or(LogFormat::Pretty),
            level,
        };
        let storage = StorageSettings {
            path: raw
                .storage
                .path
                .unwrap_or_else(|| "./data/ipn-relay".into()),
            durability: raw.storage.durability.unwrap_or(Durability::Sync),
            min_free_space: raw.storage.min_free_space.map_or(256 << 20, |s| s.0),
        };
        let retention = RetentionSettings {
            task_results: dur(raw.retention.task_results, "24h"),
            dedupe_window: dur(raw.retention.dedupe_window, "7d"),
            events: dur(raw.retention.events, "30d"),
        };
        for (key, d) in [
            ("retention.task_results", retention.task_results),
            ("retention.dedupe_window", retention.dedupe_window),
            ("retention.events", retention.events),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be longer than 0s"));
            }
        }
        let admin_tokens =
            self.secret_list("admin.tokens", raw.admin.tokens, raw.admin.tokens_env)?;
        let ingress = self.ingress(raw.ingress)?;
        let delivery = self.delivery(raw.delivery)?;
        let returns = ReturnSettings {
            wait_for_final: dur(raw.returns.wait_for_final, "0s"),
        };
        if returns.wait_for_final > Duration::from_secs(60) {
            return Err(invalid(
                "returns.wait_for_final",
                "at most 60s: a browser is waiting",
            ));
        }

        let mut merchants: Vec<MerchantSettings> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut endpoints_before = 0;
        for (i, m) in raw.merchants.into_iter().enumerate() {
            let n = m.endpoints.len();
            let m = self.merchant(i, endpoints_before, m)?;
            endpoints_before += n;
            let name = self.lines.merchant(i, &m.id);
            if let Some(j) = merchants.iter().position(|x| x.id == m.id) {
                return Err(invalid(
                    name,
                    format!("duplicate id (first defined as {})", names[j]),
                ));
            }
            for k in &m.api_keys {
                let k = k.expose_secret();
                if admin_tokens.iter().any(|t| t.expose_secret() == k) {
                    return Err(invalid(
                        format!("{name} api_keys"),
                        "an API key equal to an admin token: a merchant would get admin access",
                    ));
                }
                if let Some(j) = merchants
                    .iter()
                    .position(|x| x.api_keys.iter().any(|o| o.expose_secret() == k))
                {
                    return Err(invalid(
                        format!("{name} api_keys"),
                        format!(
                            "an API key already given to {}: keys must be unique across merchants",
                            names[j]
                        ),
                    ));
                }
            }
            merchants.push(m);
            names.push(name);
        }
        let mut providers: Vec<ProviderSettings> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for (i, p) in raw.providers.into_iter().enumerate() {
            let p = self.provider(i, p, &merchants)?;
            let name = self.lines.provider(i, &p.id);
            if let Some(j) = providers.iter().position(|x| x.id == p.id) {
                return Err(invalid(
                    name,
                    format!("duplicate id (first defined as {})", names[j]),
                ));
            }
            providers.push(p);
            names.push(name);
        }
        Ok(Settings {
            server,
            log,
            storage,
            retention,
            admin_tokens,
            ingress,
            delivery,
            returns,
            providers,
            merchants,
        })
    }

    fn server(&self, raw: RawServer) -> Result<ServerSettings, ConfigError> {
        let listen_s = raw.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = listen_s
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                invalid(
                    "server.listen",
                    format!("{listen_s:?} is not a host:port address"),
                )
            })?;
        let public_url = match raw.public_url {
            None => None,
            Some(public_s) => {
                let public = Url::parse(&public_s)
                    .map_err(|e| invalid("server.public_url", format!("{public_s:?}: {e}")))?;
                if !matches!(public.scheme(), "http" | "https")
                    || public.query().is_some()
                    || public.cannot_be_a_base()
                {
                    return Err(invalid(
                        "server.public_url",
                        "must be an http(s) URL without a query",
                    ));
                }
                Some(public.as_str().trim_end_matches('/').to_string())
            }
        };
        let max_body_bytes = raw.max_body_bytes.unwrap_or(1 << 20);
        if max_body_bytes == 0 || max_body_bytes > 64 << 20 {
            return Err(invalid(
                "server.max_body_bytes",
                "must be between 1 and 67108864",
            ));
        }
        if raw.workers == Some(0) {
            return Err(invalid("server.workers", "must be at least 1"));
        }
        Ok(ServerSettings {
            listen,
            public_url,
            max_body_bytes,
            shutdown_timeout: dur(raw.shutdown_timeout, "30s"),
            workers: raw.workers,
        })
    }

    fn ingress(&self, raw: RawIngress) -> Result<IngressSettings, ConfigError> {
        let rate = |key: &str, r: Option<RawRate>, per_second, burst| {
            let r = r.unwrap_or(RawRate { per_second, burst });
            if r.per_second == 0 || r.burst == 0 {
                return Err(invalid(key, "per_second and burst must be at least 1"));
            }
            Ok(RateLimit {
                per_second: r.per_second,
                burst: r.burst,
            })
        };
        Ok(IngressSettings {
            rate_limit: rate("ingress.rate_limit", raw.rate_limit, 1000, 2000)?,
            unauthenticated_rate_limit: rate(
                "ingress.unauthenticated_rate_limit",
                raw.unauthenticated_rate_limit,
                10,
                50,
            )?,
            trusted_proxies: cidrs(
                "ingress.trusted_proxies",
                raw.trusted_proxies.unwrap_or_default(),
            )?,
        })
    }

    fn delivery(&self, raw: RawDelivery) -> Result<DeliverySettings, ConfigError> {
        let schedule = match raw.retry_schedule {
            Some(s) => s.into_iter().map(|d| d.0).collect(),
            None => ["5s", "5m", "30m", "2h", "5h", "10h", "10h"]
                .iter()
                .map(|s| humantime::parse_duration(s).expect("default schedule parses"))
                .collect(),
        };
        let pe = raw.per_endpoint.unwrap_or(RawPerEndpoint {
            per_second: 50,
            burst: 100,
            max_in_flight: 8,
        });
        if pe.per_second == 0 || pe.burst == 0 || pe.max_in_flight == 0 {
            return Err(invalid(
                "delivery.per_endpoint",
                "per_second, burst and max_in_flight must be at least 1",
            ));
        }
        let max_in_flight = raw.max_in_flight.unwrap_or(256);
        if max_in_flight == 0 {
            return Err(invalid("delivery.max_in_flight", "must be at least 1"));
        }
        let replay_max_events = raw.replay_max_events.unwrap_or(10_000);
        if replay_max_events == 0 {
            return Err(invalid("delivery.replay_max_events", "must be at least 1"));
        }
        Ok(DeliverySettings {
            timeout: dur(raw.timeout, "15s"),
            retry_schedule: schedule,
            max_in_flight,
            per_endpoint_rate: RateLimit {
                per_second: pe.per_second,
                burst: pe.burst,
            },
            per_endpoint_in_flight: pe.max_in_flight,
            allow_private_targets: raw.allow_private_targets.unwrap_or(false),
            https_only: raw.https_only.unwrap_or(false),
            replay_max_events,
        })
    }

    /// The `i`-th merchant, whose endpoints follow `endpoints_before` others
    /// in the file.
    fn merchant(
        &self,
        i: usize,
        endpoints_before: usize,
        raw: RawMerchant,
    ) -> Result<MerchantSettings, ConfigError> {
        let key = self.lines.merchant(i, &raw.id);
        check_id(&format!("{key} id"), &raw.id)?;
        let api_keys =
            self.secret_list(&format!("{key} api_keys"), raw.api_keys, raw.api_keys_env)?;
        let mut origins = Vec::new();
        for o in &raw.allowed_return_origins {
            let u = Url::parse(o).map_err(|e| {
                invalid(
                    format!("{key} allowed_return_origins"),
                    format!("{o:?}: {e}"),
                )
            })?;
            if !u.username().is_empty() || u.password().is_some() {
                return Err(invalid(
                    format!("{key} allowed_return_origins"),
                    format!(
                        "{} has userinfo (user@host): not allowed",
                        redact_userinfo(&u)
                    ),
                ));
            }
            if !matches!(u.scheme(), "http" | "https") || u.path() != "/" || u.query().is_some() {
                return Err(invalid(
                    format!("{key} allowed_return_origins"),
                    format!("{o:?} must be an origin like https://shop.example.com (no path)"),
                ));
            }
            origins.push(u.origin().ascii_serialization());
        }
        let default_site_url = match raw.default_site_url {
            None => None,
            Some(s) => {
                let u = Url::parse(&s).map_err(|e| {
                    invalid(format!("{key} default_site_url"), format!("{s:?}: {e}"))
                })?;
                if !u.username().is_empty() || u.password().is_some() {
                    return Err(invalid(
                        format!("{key} default_site_url"),
                        format!(
                            "{} has userinfo (user@host): not allowed",
                            redact_userinfo(&u)
                        ),
                    ));
                }
                let origin = u.origin().ascii_serialization();
                if !origins.contains(&origin) {
                    return Err(invalid(
                        format!("{key} default_site_url"),
                        format!("origin {origin} is not in allowed_return_origins"),
                    ));
                }
                Some(u)
            }
        };
        let return_secret = self.secret(
            &format!("{key} return_secret"),
            raw.return_secret,
            raw.return_secret_env,
        )?;
        let mut endpoints = Vec::new();
        for (j, e) in raw.endpoints.into_iter().enumerate() {
            let ek = self.lines.endpoint(endpoints_before + j, &e.id);
            check_id(&format!("{ek} id"), &e.id)?;
            let url = Url::parse(&e.url)
                .map_err(|err| invalid(format!("{ek} url"), format!("{:?}: {err}", e.url)))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(format!("{ek} url"), "must be an http(s) URL"));
            }
            let secret = self
                .secret(&format!("{ek} secret"), e.secret, e.secret_env)?
                .ok_or_else(|| invalid(format!("{ek} secret"), "required"))?;
            decode_whsec(secret.expose_secret()).map_err(|m| invalid(format!("{ek} secret"), m))?;
            let events = e.events.unwrap_or_else(|| vec!["payment.*".into()]);
            if let Some(bad) = events.iter().find(|p| !crate::delivery::patterns::valid(p)) {
                return Err(invalid(
                    format!("{ek} events"),
                    format!(
                        "{bad:?} is not an event pattern (`*`, `payment.*`, `payment.succeeded`)"
                    ),
                ));
            }
            let ordering = match e.ordering.as_deref() {
                None | Some("fifo") => crate::store::Ordering::Fifo,
                Some("latest") => crate::store::Ordering::Latest,
                Some(other) => {
                    return Err(invalid(
                        format!("{ek} ordering"),
                        format!("{other:?}: expected \"fifo\" or \"latest\""),
                    ))
                }
            };
            if endpoints.iter().any(|x: &EndpointSettings| x.id == e.id) {
                return Err(invalid(format!("{ek} id"), "used twice for this merchant"));
            }
            endpoints.push(EndpointSettings {
                id: e.id,
                url,
                secret,
                events,
                description: e.description,
                ordering,
            });
        }
        Ok(MerchantSettings {
            id: raw.id,
            api_keys,
            allowed_return_origins: origins,
            default_site_url,
            return_secret,
            endpoints,
        })
    }

    pub(super) fn env_var(&self, key: &str, var: &str) -> Result<String, ConfigError> {
        (self.env)(var)
            .ok_or_else(|| invalid(key, format!("environment variable {var} is not set")))
    }

    pub(super) fn secret(
        &self,
        key: &str,
        value: Option<String>,
        env: Option<String>,
    ) -> Result<Option<SecretString>, ConfigError> {
        let v = match (value, env) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    key,
                    format!("set {leaf} or {leaf}_env, not both", leaf = leaf(key)),
                ))
            }
            (Some(v), None) => v,
            (None, Some(var)) => self.env_var(&format!("{key}_env"), &var)?,
            (None, None) => return Ok(None),
        };
        if v.is_empty() {
            return Err(invalid(key, "must not be empty"));
        }
        Ok(Some(SecretString::from(v)))
    }

    pub(super) fn secret_list(
        &self,
        key: &str,
        values: Option<Vec<String>>,
        env: Option<OneOrMany>,
    ) -> Result<Vec<SecretString>, ConfigError> {
        let vals = match (values, env) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    key,
                    format!("set {leaf} or {leaf}_env, not both", leaf = leaf(key)),
                ))
            }
            (Some(v), None) => v,
            (None, Some(vars)) => vars
                .into_vec()
                .iter()
                .map(|var| self.env_var(&format!("{key}_env"), var))
                .collect::<Result<_, _>>()?,
            (None, None) => Vec::new(),
        };
        if vals.iter().any(|v| v.is_empty()) {
            return Err(invalid(key, "secrets must not be empty"));
        }
        Ok(vals.into_iter().map(SecretString::from).collect())
    }
}

/// A TOML error as "line N, key K: message", without toml's source snippet
/// and without the offending value: a mistyped secret (`secrets = "…"`
/// instead of a list) must not be echoed to the terminal or the logs.
pub(super) fn parse_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let message = redact_unexpected(e.message().trim());
    let Some(span) = e.span() else {
        return ConfigError::Parse(message);
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    // The key whose value is wrong: what precedes `=` on that line (the
    // innermost one in an inline table). A wrong key is named by the message.
    let on_line = before.rsplit('\n').next().unwrap_or("");
    let key = on_line
        .trim_end()
        .strip_suffix('=')
        .and_then(|k| k.rsplit(['{', ',']).next())
        .map(str::trim)
        .filter(|k| !k.is_empty());
    ConfigError::Parse(match key {
        Some(k) => format!("line {line}, key {k}: {message}"),
        None => format!("line {line}: {message}"),
    })
}

/// serde's "invalid type: string \"…\", expected …" quotes the value; keep
/// only its kind.
fn redact_unexpected(msg: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            if let Some((unexpected, expected)) = rest.rsplit_once(", expected ") {
                let kind = unexpected
                    .split([' ', '`', '"'])
                    .next()
                    .filter(|k| !k.is_empty())
                    .unwrap_or("value");
                return format!("{prefix}{kind}, expected {expected}");
            }
        }
    }
    msg.to_string()
}

pub(super) fn dur(v: Option<Dur>, default: &str) -> Duration {
    v.map(|d| d.0)
        .unwrap_or_else(|| humantime::parse_duration(default).expect("default durations parse"))
}

/// The last part of a key, `return_secret` of `merchants "m" (line 3) return_secret`.
fn leaf(key: &str) -> &str {
    key.rsplit(' ').next().unwrap_or(key)
}

/// `u` with any password shown as `***`, so an error does not echo it.
fn redact_userinfo(u: &Url) -> String {
    let mut u = u.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    format!("{:?}", u.as_str())
}

/// Ids appear in URL paths and store keys: keep them to a safe alphabet.
pub(super) fn check_id(key: &str, id: &str) -> Result<(), ConfigError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{id:?} must be 1-64 of [A-Za-z0-9._-]"),
        ))
    }
}

/// CIDRs or single addresses (a bare address means /32 or /128).
pub(super) fn cidrs(key: &str, items: Vec<String>) -> Result<Vec<IpNet>, ConfigError> {
    items
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| invalid(key, format!("{s:?} is not a CIDR or IP address")))
        })
        .collect()
}

/// A Standard Webhooks secret: `whsec_` + base64 of the key bytes.
pub fn decode_whsec(s: &str) -> Result<Vec<u8>, String> {
    let b64 = s.strip_prefix("whsec_").unwrap_or(s);
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "must be whsec_ followed by base64".to_string())?;
    if key.len() < 16 {
        return Err("key must be at least 16 bytes".into());
    }
    Ok(key)
}
