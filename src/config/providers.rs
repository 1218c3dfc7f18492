//! Validating `[[providers]]`: id, the merchants it reports for, ack,
//! auth scheme and its secrets, mapping.

use secrecy::ExposeSecret;

use super::raw::*;
use super::spelling;
use super::validate::{check_id, cidrs, dur, Validator};
use super::*;
use crate::auth::{self, Algorithm, AuthConfig, Encoding, Scheme};
use crate::mapping::Mapping;

impl Validator<'_> {
    pub(super) fn provider(
        &self,
        i: usize,
        raw: RawProvider,
        merchants: &[MerchantSettings],
    ) -> Result<ProviderSettings, ConfigError> {
        let key = self.lines.provider(i, &raw.id);
        check_id(&format!("{key} id"), &raw.id)?;
        if let Some(m) = &raw.merchant_id {
            if !merchants.iter().any(|x| &x.id == m) {
                return Err(invalid(
                    format!("{key} merchant_id"),
                    format!("no merchant with id {m:?}"),
                ));
            }
        }
        let allowed_ips = cidrs(&format!("{key} allowed_ips"), raw.allowed_ips)?;
        let ack = match raw.ack {
            None if raw.preset == Preset::Adyen => Ack::Fixed {
                status: 200,
                body: "[accepted]".into(),
                content_type: "text/plain".into(),
            },
            None => Ack::Json { status: 202 },
            Some(a) => {
                if !(200..=299).contains(&a.status) {
                    return Err(invalid(format!("{key} ack.status"), "must be a 2xx status"));
                }
                match a.body {
                    None => Ack::Json { status: a.status },
                    Some(body) => Ack::Fixed {
                        status: a.status,
                        body,
                        content_type: a.content_type.unwrap_or_else(|| "text/plain".into()),
                    },
                }
            }
        };
        let auth = self.auth(&key, raw.preset, raw.auth, !allowed_ips.is_empty())?;
        let mapping = Mapping::compile(raw.preset, &raw.mapping)
            .map_err(|e| invalid(format!("{key} {}", e.key), e.message))?;
        let served = match raw.merchants {
            Some(list) => list,
            None => raw.merchant_id.iter().cloned().collect(),
        };
        if served.is_empty() {
            return Err(invalid(
                format!("{key} merchants"),
                "reports for no merchant: set merchant_id or a non-empty merchants list",
            ));
        }
        for (j, m) in served.iter().enumerate() {
            if !merchants.iter().any(|x| &x.id == m) {
                return Err(invalid(
                    format!("{key} merchants"),
                    format!("no merchant with id {m:?}"),
                ));
            }
            if served[..j].contains(m) {
                return Err(invalid(
                    format!("{key} merchants"),
                    format!("merchant {m:?} listed twice"),
                ));
            }
        }
        if let Some(m) = &raw.merchant_id {
            if !served.contains(m) {
                return Err(invalid(
                    format!("{key} merchant_id"),
                    format!("merchant_id {m:?} is not in its merchants"),
                ));
            }
        }
        Ok(ProviderSettings {
            id: raw.id,
            preset: raw.preset,
            merchant_id: raw.merchant_id,
            merchants: served,
            allowed_ips,
            ack,
            reorder_window: dur(raw.reorder_window, "0s"),
            auth,
            mapping,
        })
    }

    fn auth(
        &self,
        pkey: &str,
        preset: Preset,
        raw: RawAuth,
        has_ip_allowlist: bool,
    ) -> Result<AuthConfig, ConfigError> {
        let key = format!("{pkey} auth");
        let has_key = raw.public_key.is_some() || raw.public_key_file.is_some();
        let scheme = raw.scheme.unwrap_or(match preset {
            Preset::Generic => Scheme::Hmac,
            Preset::Stripe => Scheme::Stripe,
            Preset::Adyen => Scheme::AdyenHmac,
            Preset::Paymentsos => Scheme::Paymentsos,
            Preset::Begateway if has_key => Scheme::RsaSha256,
            Preset::Begateway => Scheme::Basic,
        });
        let mut secrets =
            self.secret_list(&format!("{key}.secrets"), raw.secrets, raw.secrets_env)?;
        if let Some(p) = self.secret(&format!("{key}.password"), raw.password, raw.password_env)? {
            secrets.insert(0, p);
        }
        let public_key = match (raw.public_key, raw.public_key_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    format!("{key}.public_key"),
                    "set public_key or public_key_file, not both",
                ))
            }
            (Some(pem), None) => Some(pem),
            (None, Some(f)) => {
                let f = self.base_dir.join(f);
                Some(std::fs::read_to_string(&f).map_err(|e| {
                    invalid(
                        format!("{key}.public_key_file"),
                        format!("{}: {e}", f.display()),
                    )
                })?)
            }
            (None, None) => None,
        };
        let public_key = match public_key {
            None => None,
            Some(pem) => Some(
                auth::parse_public_key(&pem)
                    .map_err(|m| invalid(format!("{key}.public_key"), m))?,
            ),
        };
        let needs_secret = !matches!(scheme, Scheme::None | Scheme::RsaSha256);
        if needs_secret && secrets.is_empty() {
            let what = if scheme == Scheme::Basic {
                "password"
            } else {
                "secrets"
            };
            return Err(invalid(
                format!("{key}.{what}"),
                format!("scheme {} needs at least one", spelling(&scheme)),
            ));
        }
        match scheme {
            Scheme::None if !has_ip_allowlist => {
                return Err(invalid(
                    format!("{key}.scheme"),
                    "\"none\" is only allowed together with a non-empty allowed_ips",
                ))
            }
            Scheme::Basic if raw.username.as_deref().unwrap_or("").is_empty() => {
                return Err(invalid(
                    format!("{key}.username"),
                    "scheme basic needs a username",
                ))
            }
            Scheme::RsaSha256 if public_key.is_none() => {
                return Err(invalid(
                    format!("{key}.public_key"),
                    "scheme rsa-sha256 needs a public key",
                ))
            }
            Scheme::StandardWebhooks => {
                for s in &secrets {
                    decode_whsec(s.expose_secret())
                        .map_err(|m| invalid(format!("{key}.secrets"), m))?;
                }
            }
            Scheme::AdyenHmac => {
                for s in &secrets {
                    hex::decode(s.expose_secret()).map_err(|_| {
                        invalid(format!("{key}.secrets"), "Adyen HMAC keys are hex strings")
                    })?;
                }
            }
            _ => {}
        }
        let header = raw.header.unwrap_or_else(|| "X-Signature".into());
        if actix_web::http::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(invalid(
                format!("{key}.header"),
                format!("{header:?} is not a valid header name"),
            ));
        }
        Ok(AuthConfig {
            scheme,
            algorithm: raw.algorithm.unwrap_or(Algorithm::Sha256),
            header,
            encoding: raw.encoding.unwrap_or(Encoding::Hex),
            prefix: raw.prefix.unwrap_or_default(),
            secrets,
            tolerance: dur(raw.tolerance, "5m"),
            username: raw.username,
            public_key,
        })
    }
}
