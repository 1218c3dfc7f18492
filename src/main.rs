//! The `ipn-relay` binary: parse the CLI (serve, check-config, sign, backup,
//! trigger), load config, run.

use std::path::PathBuf;

/// mimalloc: sled allocates and frees a node copy on every write; with
/// glibc malloc that was ~25% of the CPU in `benches/ingest.rs`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ipn_relay::app::Application;
use ipn_relay::config::{self, Settings};

#[derive(Parser)]
#[command(
    name = "ipn-relay",
    version,
    about = "Verify, store, order and relay payment IPNs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        #[arg(long, env = "IPN_RELAY_CONFIG")]
        config: PathBuf,
    },
    /// Validate the config and print what would run (secrets redacted).
    CheckConfig {
        #[arg(long, env = "IPN_RELAY_CONFIG")]
        config: PathBuf,
    },
    /// Print the headers a provider would send for a body.
    ///
    /// PaymentsOS needs `--header "event-type: <type>"` (e.g.
    /// payment.capture.create): its signature covers that header and its
    /// preset maps statuses by it, and the body does not say which it is.
    Sign {
        #[arg(long, env = "IPN_RELAY_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        provider: String,
        /// The body file, or `-` for stdin.
        #[arg(long)]
        body: PathBuf,
        /// Extra request header the provider sends (printed too), e.g.
        /// "event-type: payment.capture.create", required for PaymentsOS.
        #[arg(long = "header")]
        headers: Vec<String>,
    },
    /// Ask the running service for an online backup of its store into DIR
    /// (a new, empty directory on the service's machine); restore by
    /// pointing `storage.path` at it.
    Backup {
        #[arg(long, env = "IPN_RELAY_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        to: PathBuf,
        /// Service base URL. Default: server.public_url, else http://<server.listen>.
        #[arg(long)]
        url: Option<String>,
    },
    /// Send a signed sample IPN to a running service and print its result.
    Trigger {
        #[arg(long, env = "IPN_RELAY_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        provider: String,
        /// A sample of the provider's preset; `list` shows them all.
        #[arg(long)]
        sample: Option<String>,
        /// Default: a fresh random id.
        #[arg(long = "payment-id")]
        payment_id: Option<String>,
        /// Canonical status the event should map to, e.g. "authorized".
        #[arg(long)]
        status: Option<String>,
        /// Service base URL. Default: server.public_url, else http://<server.listen>.
        #[arg(long)]
        url: Option<String>,
    },
}

fn load(path: &std::path::Path) -> anyhow::Result<Settings> {
    Ok(Settings::load(path, &|k| std::env::var(k).ok())?)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::CheckConfig { config } => {
            let s = load(&config)?;
            print!("config OK: {}\n{}", config.display(), config::describe(&s));
            Ok(())
        }
        Command::Sign {
            config,
            provider,
            body,
            headers,
        } => sign(&load(&config)?, &provider, &body, &headers),
        Command::Trigger {
            config,
            provider,
            sample,
            payment_id,
            status,
            url,
        } => {
            let s = load(&config)?;
            if sample.as_deref() == Some("list") {
                print!("{}", ipn_relay::trigger::listing(&s, &provider)?);
                return Ok(());
            }
            let status = status
                .map(|v| {
                    v.parse::<ipn_relay::domain::Status>().map_err(|e| {
                        let all = ipn_relay::domain::Status::ALL.map(|s| s.as_str());
                        anyhow::anyhow!("{e}; one of: {}", all.join(", "))
                    })
                })
                .transpose()?;
            let o = ipn_relay::trigger::Options {
                provider,
                sample,
                payment_id,
                status,
                url,
                wait: std::time::Duration::from_secs(10),
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let res = rt.block_on(ipn_relay::trigger::run(&s, &o, &mut std::io::stdout()));
            if let Err(e) = &res {
                if e.downcast_ref::<ipn_relay::samples::SampleError>()
                    .is_some_and(|e| {
                        matches!(e, ipn_relay::samples::SampleError::UnknownSample { .. })
                    })
                {
                    eprint!("{}", ipn_relay::trigger::listing(&s, &o.provider)?);
                }
            }
            res
        }
        Command::Backup { config, to, url } => {
            let s = load(&config)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let out = rt.block_on(ipn_relay::trigger::backup(&s, &to, url))?;
            println!("{out}");
            Ok(())
        }
        Command::Serve { config } => {
            // Test builds only: crash points named in `FAILPOINTS` (see the store docs).
            #[cfg(feature = "failpoints")]
            let _failpoints = fail::FailScenario::setup();
            let s = load(&config)?;
            ipn_relay::telemetry::init(&s.log);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let app = Application::build(s)?;
                tracing::info!(port = app.port(), "ipn-relay listening");
                app.run_until(shutdown_signal()).await
            })
        }
    }
}

/// Headers a provider always sends that `sign` cannot make up, with an
/// example value: PaymentsOS's `event-type` says which resource
/// (authorization, capture, charge, void, refund) and action the body is
/// about; the body does not, yet the signature covers it and the preset's
/// statuses are keyed on it.
fn required_headers(
    p: &ipn_relay::config::ProviderSettings,
) -> &'static [(&'static str, &'static str)] {
    use ipn_relay::{auth::Scheme, mapping::Preset};
    if p.preset == Preset::Paymentsos || p.auth.scheme == Scheme::Paymentsos {
        &[("event-type", "payment.capture.create")]
    } else {
        &[]
    }
}

/// Prints, one `Name: value` a line, every header the provider would send
/// (`content-type`, the `--header`s, the signature headers), so the output
/// can go to `curl -H @file`. A scheme that rewrites the body (adyen-hmac)
/// prints it after a blank line. Refuses, naming it, a header the provider
/// always sends that was not given ([`required_headers`]).
fn sign(
    s: &Settings,
    provider: &str,
    body: &std::path::Path,
    extra: &[String],
) -> anyhow::Result<()> {
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
    use std::io::Read;
    let p = s
        .provider(provider)
        .with_context(|| format!("no provider {provider:?} in the config"))?;
    let body = if body.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .context("reading the body from stdin")?;
        b
    } else {
        std::fs::read(body).with_context(|| format!("reading {}", body.display()))?
    };
    let mut map = HeaderMap::new();
    let mut lines: Vec<(String, String)> = Vec::new();
    for h in extra {
        let (k, v) = h
            .split_once(':')
            .context("--header takes \"Name: value\"")?;
        let name = HeaderName::from_bytes(k.trim().as_bytes())?;
        map.insert(name.clone(), HeaderValue::from_str(v.trim())?);
        lines.push((name.as_str().to_string(), v.trim().to_string()));
    }
    for (name, example) in required_headers(p) {
        anyhow::ensure!(
            map.contains_key(*name),
            "provider {provider:?} sends an {name} header, which the body does not carry: \
             add e.g. --header \"{name}: {example}\""
        );
    }
    if !map.contains_key("content-type") {
        let ct = if serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
            "application/json"
        } else {
            "application/x-www-form-urlencoded"
        };
        lines.insert(0, ("content-type".into(), ct.into()));
    }
    let signed = ipn_relay::auth::sign(&p.auth, &map, &body, chrono::Utc::now().timestamp())?;
    for (k, v) in &signed.headers {
        let k = k.to_string();
        lines.retain(|(have, _)| !have.eq_ignore_ascii_case(&k));
        lines.push((k, v.to_string()));
    }
    for (k, v) in &lines {
        println!("{k}: {v}");
    }
    if let Some(b) = signed.body {
        println!("\n{}", String::from_utf8_lossy(&b));
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
