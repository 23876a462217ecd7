//! Building and running the service: what `memberd serve` and the tests' `spawn_app` share.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::net::TcpListener;

use crate::authn::Secret;
use crate::authn::api_key::generate_api_key;
use crate::authn::internal::{InternalSecrets, stored_digest};
use crate::config::{Environment, Settings};
use crate::http::{AppState, router};
use crate::service::access::Engine;
use crate::service::clients::{ClientAuthenticator, KeyHasher};
use crate::service::directory::Directory;
use crate::store::Store;

const DEV_SECRET_SETTING: &str = "dev_internal_secret_digest";

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

/// Opens the store and brings its schema up to date.
pub async fn open_store(database_url: &str) -> anyhow::Result<Store> {
    let store = Store::connect(database_url)
        .await
        .context("opening the database")?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// The configured internal secrets; in development without any, one generated
/// on first start and printed once (only its digest is stored).
async fn internal_secrets(settings: &Settings, store: &Store) -> anyhow::Result<InternalSecrets> {
    let mut secrets = InternalSecrets::new(&settings.internal_secrets);
    if !secrets.is_empty() {
        return Ok(secrets);
    }
    if settings.environment == Environment::Production {
        bail!(
            "no internal secret configured: set MEMBERD_INTERNAL_SECRETS (production refuses to generate one)"
        );
    }
    let candidate = Secret::new(generate_api_key().expose().replacen("mbr_", "mbs_", 1));
    if store
        .insert_setting_if_absent(DEV_SECRET_SETTING, &stored_digest(&candidate))
        .await?
    {
        eprintln!(
            "\n  memberd generated a development internal secret (shown once, only its hash is kept):\n\n    \
             X-Internal-Secret: {}\n\n  To choose your own, set MEMBERD_INTERNAL_SECRETS.\n",
            candidate.expose()
        );
    } else {
        tracing::info!(
            "using the development internal secret generated on first start; set MEMBERD_INTERNAL_SECRETS to replace it"
        );
    }
    let digest = store
        .setting(DEV_SECRET_SETTING)
        .await?
        .context("the development secret vanished")?;
    if !secrets.push_stored_digest(&digest) {
        bail!(
            "the stored development secret digest is malformed; delete setting {DEV_SECRET_SETTING}"
        );
    }
    Ok(secrets)
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = open_store(&settings.database_url).await?;
        let internal_secrets = internal_secrets(&settings, &store).await?;
        let listener = TcpListener::bind(settings.bind)
            .await
            .with_context(|| format!("binding {}", settings.bind))?;
        let hasher = KeyHasher::default();
        let started = std::time::Instant::now();
        let engine = Engine::load(&store).await.context("compiling the policy")?;
        tracing::info!(revision = %engine.revision(), elapsed_ms = started.elapsed().as_millis() as u64, "policy compiled");
        let state = AppState {
            directory: Directory::new(store.clone(), engine.clone()),
            engine,
            client_auth: ClientAuthenticator::new(
                store.clone(),
                hasher,
                settings.api_key_cache_ttl,
            ),
            internal_secrets: Arc::new(internal_secrets),
            settings: Arc::new(settings),
            store,
        };
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let store = self.state.store.clone();
        tracing::info!(addr = %self.local_addr(), backend = ?store.backend(), "memberd listening");
        axum::serve(
            self.listener,
            router(self.state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving")?;
        store.close().await;
        Ok(())
    }
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = terminate => {} }
    tracing::info!("shutting down");
}
