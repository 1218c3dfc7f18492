//! `ipn-relay trigger`: a local dev loop, as `stripe trigger` is for Stripe.
//!
//! Builds a sample IPN for a provider's preset ([`crate::samples`]), signs it
//! with the provider's configured secrets, POSTs it to a running service,
//! prints the ack, then polls the task's `status_url` until it is no longer
//! processing (bounded by [`Options::wait`]) and prints the result from
//! `response_url`. Any failure along the way is an error (non-zero exit).
//!
//! [`backup`] is `ipn-relay backup`, the other command that talks to a
//! running service: it asks for an online backup of the store.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::config::Settings;
use crate::domain::Status;
use crate::mapping::Preset;
use crate::samples;

#[derive(Debug, Clone)]
pub struct Options {
    pub provider: String,
    /// A sample name; `None`: the preset's default (or the first that can
    /// produce `status`).
    pub sample: Option<String>,
    /// `None`: a fresh random id.
    pub payment_id: Option<String>,
    pub status: Option<Status>,
    /// `None`: `server.public_url`, else `http://<server.listen>`.
    pub url: Option<String>,
    /// How long to poll the task before giving up.
    pub wait: Duration,
}

/// Every preset's sample names; for the provider's own preset, with the
/// canonical statuses each can produce under its mapping.
pub fn listing(s: &Settings, provider: &str) -> anyhow::Result<String> {
    let p = s
        .provider(provider)
        .with_context(|| format!("no provider {provider:?} in the config"))?;
    let mut out = String::new();
    for preset in [
        Preset::Generic,
        Preset::Stripe,
        Preset::Adyen,
        Preset::Paymentsos,
        Preset::Begateway,
    ] {
        let mine = preset == p.preset;
        let tag = if mine {
            format!(" (provider {provider})")
        } else {
            String::new()
        };
        let _ = writeln!(out, "{}{tag}:", samples::preset_name(preset));
        for (i, sample) in samples::samples(preset).iter().enumerate() {
            let default = if i == 0 { " [default]" } else { "" };
            if mine {
                let can = samples::reachable(&p.mapping, sample, "pay_list", 0);
                let can: Vec<&str> = can.iter().map(|s| s.as_str()).collect();
                let _ = writeln!(out, "  {}{default}: {}", sample.name, can.join(", "));
            } else {
                let _ = writeln!(out, "  {}{default}", sample.name);
            }
        }
    }
    Ok(out)
}

fn fresh_payment_id(preset: Preset) -> String {
    let id = ulid::Ulid::new().to_string().to_lowercase();
    match preset {
        Preset::Stripe => format!("pi_{id}"),
        Preset::Paymentsos => uuid::Uuid::new_v4().to_string(),
        Preset::Adyen | Preset::Begateway => format!("order-{id}"),
        Preset::Generic => format!("pay_{id}"),
    }
}

fn base_url(s: &Settings, o: &Options) -> String {
    let base = o
        .url
        .clone()
        .or_else(|| s.server.public_url.clone())
        .unwrap_or_else(|| format!("http://{}", s.server.listen));
    base.trim_end_matches('/').to_string()
}

/// Run one trigger; progress goes to `out` as it happens.
pub async fn run(s: &Settings, o: &Options, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let p = s
        .provider(&o.provider)
        .with_context(|| format!("no provider {:?} in the config", o.provider))?;
    let payment_id = o
        .payment_id
        .clone()
        .unwrap_or_else(|| fresh_payment_id(p.preset));
    let now = chrono::Utc::now().timestamp();
    let req = samples::build(&p.mapping, o.sample.as_deref(), &payment_id, o.status, now)?;
    let samples::Wire { headers, body } = samples::sign(&p.auth, &req, now)
        .with_context(|| format!("cannot sign for provider {:?}", p.id))?;
    let base = base_url(s, o);
    let url = format!("{base}/v1/ipn/{}", p.id);
    writeln!(
        out,
        "sample {}/{}: payment {} status {} (provider value {:?})",
        samples::preset_name(p.preset),
        req.sample,
        req.payment_id,
        req.status,
        req.native
    )?;
    writeln!(out, "POST {url}")?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut rb = client.post(&url).body(body);
    for (k, v) in &headers {
        rb = rb.header(k, v);
    }
    let r = rb
        .send()
        .await
        .with_context(|| format!("POST {url}: is the service running?"))?;
    let code = r.status();
    let request_id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = r.text().await?;
    writeln!(out, "ack: {code}\n{text}")?;
    if !code.is_success() {
        bail!("the service refused the IPN with {code}");
    }
    let ack: Option<Value> = serde_json::from_str(&text).ok();
    let field = |v: &Option<Value>, k: &str| v.as_ref()?.get(k)?.as_str().map(str::to_owned);
    let Some(id) = request_id.or_else(|| field(&ack, "request_id")) else {
        bail!("the ack names no request id (no x-request-id header)");
    };
    let status_url =
        field(&ack, "status_url").unwrap_or_else(|| format!("{base}/v1/async/status/{id}"));
    let status = poll(&client, &status_url, o.wait).await?;
    let response_url = field(&Some(status), "response_url")
        .or_else(|| field(&ack, "response_url"))
        .unwrap_or_else(|| format!("{base}/v1/async/result/{id}"));
    let r = client.get(&response_url).send().await?;
    let code = r.status();
    let result: Value = r.json().await.context("the result is not JSON")?;
    writeln!(
        out,
        "result: {code} ({response_url})\n{}",
        serde_json::to_string_pretty(&result)?
    )?;
    if !code.is_success() {
        bail!("task {id} ended in error");
    }
    Ok(())
}

/// GET `status_url` until its `status` is no longer "processing".
async fn poll(client: &reqwest::Client, status_url: &str, wait: Duration) -> anyhow::Result<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let v: Value = client
            .get(status_url)
            .send()
            .await
            .with_context(|| format!("GET {status_url}"))?
            .json()
            .await
            .context("the task status is not JSON")?;
        if v["status"] != "processing" {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("task still processing after {wait:?} ({status_url})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `ipn-relay backup`: `POST /v1/admin/backup` on the running service with
/// the config's first admin token; returns the service's answer.
pub async fn backup(
    s: &Settings,
    to: &std::path::Path,
    url: Option<String>,
) -> anyhow::Result<String> {
    use secrecy::ExposeSecret;
    let token = s
        .admin_tokens
        .first()
        .ok_or_else(|| anyhow::anyhow!("backup needs an admin token in [admin] tokens"))?;
    let to = std::path::absolute(to)?;
    let base = url
        .or_else(|| s.server.public_url.clone())
        .unwrap_or_else(|| format!("http://{}", s.server.listen));
    let r = reqwest::Client::new()
        .post(format!("{}/v1/admin/backup", base.trim_end_matches('/')))
        .bearer_auth(token.expose_secret())
        .json(&serde_json::json!({ "to": to }))
        .send()
        .await
        .with_context(|| format!("is the service running at {base}?"))?;
    let status = r.status();
    let text = r.text().await?;
    anyhow::ensure!(status.is_success(), "backup failed: {status} {text}");
    Ok(text)
}
