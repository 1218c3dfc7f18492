//! Build the whole service on a listener: store, background workers, HTTP.
//! `main` and the black-box tests use the same builder; tests bind port 0.
//! [`Application::run_until`] returns an error when the store failed for
//! good (see [`Store::failed`]) or a background worker (processor,
//! dispatcher, janitor) ended or panicked before shutdown, so `main` exits
//! non-zero and the supervisor restarts the process.

use std::future::Future;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::config::Durability;
use crate::config::Settings;
use crate::http::{routes, AppState};
use crate::processor;
use crate::store::sled_backend::{SledOptions, SledStore};
use crate::store::{Store, StoreError};

/// Nice the calling thread (Linux: per-thread priority) so that background
/// processing yields the CPU to the HTTP workers that acknowledge IPNs.
fn lower_thread_priority() {
    // SAFETY: plain syscalls on the current thread; failure only means the
    // thread keeps its priority (the shipped systemd unit denies
    // setpriority with EPERM: `SystemCallErrorNumber=EPERM`).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

pub struct Application {
    port: u16,
    settings: Arc<Settings>,
    store: Arc<dyn Store>,
    server: actix_web::dev::Server,
    cx: processor::Context,
    workers_alive: Arc<AtomicBool>,
}

impl Application {
    /// Open the store and bind `server.listen` (port 0 picks a free port).
    pub fn build(settings: Settings) -> anyhow::Result<Application> {
        Self::build_with_clock(settings, Arc::new(SystemClock))
    }

    /// [`Self::build`] reading time from `clock` (tests pass a manual one).
    pub fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Application> {
        for p in &settings.providers {
            if p.auth.scheme == crate::auth::Scheme::None {
                tracing::warn!(
                    provider = %p.id,
                    allowed_ips = ?p.allowed_ips,
                    "provider accepts IPNs without authentication, trusting its IP allow-list only"
                );
            }
        }
        let settings = Arc::new(settings);
        let opts = SledOptions {
            sync: settings.storage.durability == Durability::Sync,
        };
        let store: Arc<dyn Store> = Arc::new(
            SledStore::open(&settings.storage.path, opts).map_err(|e| match e {
                // Already one line naming the path.
                StoreError::Open(_) => anyhow::Error::new(e),
                e => anyhow::Error::new(e).context(format!(
                    "opening the store at {}",
                    settings.storage.path.display()
                )),
            })?,
        );
        let listener = TcpListener::bind(settings.server.listen)
            .with_context(|| format!("binding {}", settings.server.listen))?;
        let bound = listener.local_addr()?;
        let port = bound.port();
        let public_url = settings
            .server
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"));
        let workers_alive = Arc::new(AtomicBool::new(true));
        let (applied_tx, applied_rx) = tokio::sync::watch::channel(0u64);
        let cx = processor::Context {
            clock: clock.clone(),
            applied: Arc::new(applied_tx),
        };
        let state = web::Data::new(AppState::new(
            settings.clone(),
            store.clone(),
            workers_alive.clone(),
            public_url,
            clock,
            applied_rx,
        ));
        let max_body = settings.server.max_body_bytes;
        // actix renders each access-log line as the request arrives, whether
        // or not the level lets it out: only install it when it does.
        let access_log = tracing::enabled!(target: "ipn_relay::access", tracing::Level::INFO);
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(max_body))
                .wrap(actix_web::middleware::Condition::new(
                    access_log,
                    actix_web::middleware::Logger::new("%a \"%r\" %s %b %Dms")
                        .log_target("ipn_relay::access"),
                ))
                .configure(routes)
        })
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout.as_secs().max(1))
        .listen(listener)?;
        if let Some(w) = settings.server.workers {
            server = server.workers(w);
        }
        Ok(Application {
            port,
            settings,
            store,
            server: server.run(),
            cx,
            workers_alive,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serve until `shutdown` resolves, then stop accepting, let in-flight
    /// requests finish (up to `server.shutdown_timeout`), stop the workers
    /// and flush the store.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        // Before anything is applied, so config endpoints get their deliveries.
        self.store
            .sync_config_endpoints(config_endpoints(&self.settings, self.cx.clock.now_ms()))
            .await
            .context("writing the config file's endpoints to the store")?;
        let token = CancellationToken::new();
        // Cancelled as soon as shutdown begins: no new delivery attempts.
        let relay_token = CancellationToken::new();
        // The background thread's end: Some(why) when a worker died first.
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<Option<String>>();
        let background = {
            let (store, settings, cx, token, relay_token) = (
                self.store.clone(),
                self.settings.clone(),
                self.cx.clone(),
                token.clone(),
                relay_token.clone(),
            );
            let alive = self.workers_alive.clone();
            // Processing runs on its own runtime whose threads are niced: when
            // CPU is short, acknowledging IPNs wins and the durable inbox
            // absorbs the burst (processing is replayable; acks are not).
            std::thread::Builder::new()
                .name("ipn-relay-background".into())
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .thread_name("ipn-relay-processor")
                        .on_thread_start(lower_thread_priority)
                        .enable_all()
                        .build();
                    let died = match rt {
                        Ok(rt) => rt.block_on(async {
                            let mut janitor = tokio::spawn(processor::janitor(
                                store.clone(),
                                settings.clone(),
                                cx.clock.clone(),
                                token.clone(),
                            ));
                            let mut dispatcher = tokio::spawn(crate::delivery::dispatcher::run(
                                store.clone(),
                                settings.clone(),
                                cx.clock.clone(),
                                relay_token.clone(),
                            ));
                            let mut proc = tokio::spawn(processor::run(
                                store,
                                settings,
                                cx,
                                token.clone(),
                            ));
                            // Each ends only once its token is cancelled; one
                            // that ends (or panics) before is a dead worker.
                            let first = tokio::select! {
                                r = &mut proc => ("processor", r, &token),
                                r = &mut dispatcher => ("dispatcher", r, &relay_token),
                                r = &mut janitor => ("janitor", r, &token),
                            };
                            let died = (!first.2.is_cancelled()).then(|| match first.1 {
                                Err(e) if e.is_panic() => format!("the {} panicked", first.0),
                                _ => format!("the {} stopped", first.0),
                            });
                            if died.is_some() {
                                // Not ready from now on; stop the others; the process exits.
                                alive.store(false, Ordering::SeqCst);
                                relay_token.cancel();
                                token.cancel();
                            }
                            for h in [proc, dispatcher, janitor] {
                                if !h.is_finished() {
                                    let _ = h.await;
                                }
                            }
                            died
                        }),
                        Err(e) => Some(format!("cannot start the processor runtime: {e}")),
                    };
                    if let Some(why) = &died {
                        tracing::error!(reason = %why, "a background worker died; exiting for a restart");
                        alive.store(false, Ordering::SeqCst);
                    }
                    let _ = done_tx.send(died);
                })?
        };
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let mut fatal = None;
        tokio::select! {
            r = &mut server => {
                relay_token.cancel();
                token.cancel();
                r??;
            }
            _ = shutdown => {
                tracing::info!("shutting down: no new connections, finishing in-flight requests and deliveries");
                relay_token.cancel();
                handle.stop(true).await;
                let _ = server.await;
                token.cancel();
            }
            e = self.store.failed() => {
                tracing::error!(error = %e, "the store cannot write any more; exiting for a restart");
                relay_token.cancel();
                // In-flight requests get their 503; nothing new is accepted.
                handle.stop(true).await;
                let _ = server.await;
                token.cancel();
                fatal = Some(format!("store failed: {e}"));
            }
            r = &mut done_rx => {
                // Nothing cancelled the workers: one of them died.
                let why = r.ok().flatten().unwrap_or_else(|| "the background thread ended".into());
                relay_token.cancel();
                handle.stop(true).await;
                let _ = server.await;
                token.cancel();
                fatal = Some(format!("{why}; exiting for a restart"));
            }
        }
        if !done_rx.is_terminated() {
            let grace = self.settings.server.shutdown_timeout;
            let _ = tokio::time::timeout(grace, &mut done_rx).await;
        }
        drop(background);
        self.store.close();
        if let Some(e) = fatal {
            anyhow::bail!("{e}");
        }
        tracing::info!("store flushed; bye");
        Ok(())
    }
}

/// The config file's `[[merchants.endpoints]]` as store records.
fn config_endpoints(settings: &Settings, now: i64) -> Vec<crate::store::EndpointRecord> {
    use secrecy::ExposeSecret;
    settings
        .merchants
        .iter()
        .flat_map(|m| {
            m.endpoints
                .iter()
                .map(move |e| crate::store::EndpointRecord {
                    id: e.id.clone(),
                    merchant_id: m.id.clone(),
                    url: e.url.to_string(),
                    events: e.events.clone(),
                    description: e.description.clone(),
                    ordering: e.ordering,
                    disabled: false,
                    disabled_reason: None,
                    secret: e.secret.expose_secret().to_string(),
                    previous_secret: None,
                    source: crate::store::EndpointSource::Config,
                    created_at: now,
                    updated_at: now,
                })
        })
        .collect()
}
