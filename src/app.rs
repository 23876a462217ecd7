//! Building and running the service: what `memberd serve` and the tests' `spawn_app` share.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;

use crate::authn::Secret;
use crate::authn::api_key::generate_api_key;
use crate::authn::frontend::FrontendTokens;
use crate::authn::hashing::HashPool;
use crate::authn::internal::{InternalSecrets, stored_digest};
use crate::authn::password::PasswordPolicy;
use crate::authn::tokens::KeyEncryptionKey;
use crate::config::{Environment, Settings};
use crate::http::{AppState, Services, router};
use crate::ratelimit::Limits;
use crate::redis_link::RedisLink;
use crate::service::access::Engine;
use crate::service::audit_log::AuditLog;
use crate::service::auth::{Auth, LoginSettings};
use crate::service::authentik::Authentik;
use crate::service::clients::{ClientAdmin, ClientAuthenticator};
use crate::service::directory::Directory;
use crate::service::health::Health;
use crate::service::oidc::Oidc;
use crate::service::provisioning::Provisioning;
use crate::service::sessions::{RedisSessions, SessionStore};
use crate::store::Store;

const DEV_SECRET_SETTING: &str = "dev_internal_secret_digest";
const DEV_KEK_SETTING: &str = "dev_key_encryption_key";

pub struct Application {
    listener: TcpListener,
    state: AppState,
    /// The pool, closed last when serving ends.
    store: Store,
    /// A development secret generated for this start, kept and shown once listening.
    new_secret: Option<Secret>,
    /// Tasks that use the pool in the background (the change follower, the
    /// maintenance): stopped before the pool is closed.
    background: Vec<tokio::task::JoinHandle<()>>,
}

/// Opens the store and brings its schema up to date.
pub async fn open_store(database_url: &str) -> anyhow::Result<Store> {
    let store = Store::connect(database_url)
        .await
        .map_err(|e| anyhow::anyhow!("opening the database: {}", connect_failure(&e)))?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// One line that says why the database could not be opened. sqlx's error
/// prints PostgreSQL's message and then, as its source, the same message
/// again; and a missing database deserves the step that creates it.
fn connect_failure(e: &crate::store::StoreError) -> String {
    use crate::store::StoreError;
    match e {
        StoreError::Database(sqlx::Error::Database(db))
            if db.code().as_deref() == Some("3D000") =>
        {
            format!(
                "{} (memberd does not create PostgreSQL databases: create it first, \
                 e.g. `createdb -h 127.0.0.1 -U postgres memberd`)",
                db.message()
            )
        }
        StoreError::Database(sqlx::Error::Database(db)) => db.message().to_owned(),
        other => other.to_string(),
    }
}

/// The configured internal secrets; in development without any, the one
/// generated on an earlier start (only its digest is kept), or a new one.
/// A new one is stored and shown only once the server listens
/// ([`announce_new_secret`]): generated and stored before a start that then
/// failed (the port taken, say), it was never shown and never shown again.
async fn internal_secrets(
    settings: &Settings,
    store: &Store,
) -> anyhow::Result<(InternalSecrets, Option<Secret>)> {
    let mut secrets = InternalSecrets::new(&settings.internal_secrets);
    if !secrets.is_empty() {
        return Ok((secrets, None));
    }
    if settings.environment == Environment::Production {
        bail!(
            "no internal secret configured: set MEMBERD_INTERNAL_SECRETS (production refuses to generate one)"
        );
    }
    let (digest, new) = match store.setting(DEV_SECRET_SETTING).await? {
        Some(digest) => {
            tracing::info!(
                "using the development internal secret generated on first start; set MEMBERD_INTERNAL_SECRETS to replace it"
            );
            (digest, None)
        }
        None => {
            let new = Secret::new(generate_api_key().expose().replacen("mbr_", "mbs_", 1));
            (stored_digest(&new), Some(new))
        }
    };
    if !secrets.push_stored_digest(&digest) {
        bail!(
            "the stored development secret digest is malformed; delete setting {DEV_SECRET_SETTING}"
        );
    }
    Ok((secrets, new))
}

/// Keeps a newly generated development secret's digest and shows the secret,
/// once the server is listening.
async fn announce_new_secret(store: &Store, secret: &Secret) -> anyhow::Result<()> {
    if !store
        .insert_setting_if_absent(DEV_SECRET_SETTING, &stored_digest(secret))
        .await?
    {
        bail!(
            "another memberd generated the development internal secret at the same moment; start again \
             (or set MEMBERD_INTERNAL_SECRETS)"
        );
    }
    eprintln!(
        "\n  memberd generated a development internal secret (shown once, only its hash is kept):\n\n    \
         X-Internal-Secret: {}\n\n  To choose your own, set MEMBERD_INTERNAL_SECRETS.\n",
        secret.expose()
    );
    Ok(())
}

/// The configured key-encryption key; in development without one, one
/// generated on first start and kept in the database. That protects nothing
/// at rest, which is why production refuses to start without a configured key.
pub async fn key_encryption_key(
    settings: &Settings,
    store: &Store,
) -> anyhow::Result<KeyEncryptionKey> {
    if let Some(text) = &settings.key_encryption_key {
        return KeyEncryptionKey::parse(text).context("MEMBERD_KEY_ENCRYPTION_KEY");
    }
    if settings.environment == Environment::Production {
        bail!(
            "no key-encryption key configured: set MEMBERD_KEY_ENCRYPTION_KEY to 32 random bytes in base64 \
             (production refuses to generate one)"
        );
    }
    let (_, candidate) = KeyEncryptionKey::generate();
    if store
        .insert_setting_if_absent(DEV_KEK_SETTING, candidate.expose())
        .await?
    {
        eprintln!(
            "\n  memberd generated a development key-encryption key and keeps it in the database,\n  \
             where it protects nothing. For production, set:\n\n    \
             MEMBERD_KEY_ENCRYPTION_KEY={}\n\n  (any 32 random bytes, e.g. `openssl rand -base64 32`).\n",
            candidate.expose()
        );
    }
    let stored = store
        .setting(DEV_KEK_SETTING)
        .await?
        .context("the development key-encryption key vanished")?;
    KeyEncryptionKey::parse(&Secret::new(stored))
        .context("the stored development key-encryption key")
}

/// Who memberd's tokens say issued them: the public URL, else the address bound.
fn issuer(settings: &Settings, local_addr: SocketAddr) -> String {
    match &settings.public_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{local_addr}"),
    }
}

/// One connection to Redis, when configured, for sessions and rate limits alike.
async fn redis(settings: &Settings) -> anyhow::Result<Option<RedisLink>> {
    let Some(url) = &settings.redis_url else {
        return Ok(None);
    };
    let link = RedisLink::connect(url, settings.redis_timeout)
        .await
        .context("connecting to Redis (MEMBERD_REDIS_URL)")?;
    Ok(Some(link))
}

pub fn login_settings(settings: &Settings, issuer: String) -> LoginSettings {
    let mut login = LoginSettings::new(issuer);
    login.captcha = settings.login_captcha;
    login.max_failures = i64::from(settings.login_max_failures);
    login.lockout = settings.lockout;
    login.password_policy = PasswordPolicy {
        min_chars: settings.password_min_length,
    };
    login
}

/// The process's one pool for password-grade hashes: logins and API keys.
pub fn hash_pool(settings: &Settings) -> anyhow::Result<HashPool> {
    let threads = settings
        .password_hash_concurrency
        .unwrap_or_else(HashPool::default_threads);
    HashPool::new(
        settings.password_hash_cost,
        threads,
        Duration::from_secs(10),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = open_store(&settings.database_url).await?;
        let (internal_secrets, new_secret) = internal_secrets(&settings, &store).await?;
        let listener = TcpListener::bind(settings.bind)
            .await
            .with_context(|| format!("binding {}", settings.bind))?;
        let hashes = hash_pool(&settings)?;
        let started = std::time::Instant::now();
        let engine = Engine::load(&store).await.context("compiling the policy")?;
        tracing::info!(revision = %engine.revision(), elapsed_ms = started.elapsed().as_millis() as u64, "policy compiled");
        let directory =
            Directory::new(store.clone(), engine.clone()).with_catalog(settings.catalog);
        let follower = crate::service::follow::spawn(
            directory.clone(),
            store.clone(),
            crate::service::follow::POLL_EVERY,
        );
        let kek = key_encryption_key(&settings, &store).await?;
        let redis = redis(&settings).await?;
        let (sessions, limits) = match &redis {
            Some(link) => (
                SessionStore::Redis(
                    RedisSessions::new(link.clone(), settings.redis_prefix.as_str())
                        .audited_in(store.clone()),
                ),
                Limits::redis(link.clone(), settings.redis_prefix.as_str()),
            ),
            None => (SessionStore::Database(store.clone()), Limits::default()),
        };
        let issuer = issuer(&settings, listener.local_addr()?);
        let auth = Auth::new(
            store.clone(),
            directory.clone(),
            sessions,
            hashes.clone(),
            kek,
            login_settings(&settings, issuer),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("loading the signing keys")?;
        let auth = auth.with_limits(limits.clone());
        let maintenance = spawn_maintenance(auth.clone(), limits.clone());
        let frontend_tokens = settings
            .frontend_secret
            .as_ref()
            .map(|secret| {
                FrontendTokens::new(secret, settings.frontend_cipher).map(|tokens| {
                    tokens.with_max_lifetime(settings.frontend_token_max_lifetime.as_secs())
                })
            })
            .transpose()
            .context("MEMBERD_FRONTEND_SECRET")?
            .map(Arc::new);
        let oidc = match &settings.oidc {
            Some(oidc) => Some(Oidc::start(oidc.clone()).await),
            None => None,
        };
        let authentik = settings
            .authentik
            .clone()
            .map(|a| Authentik::new(a, auth.clone()));
        let state = AppState::new(Services {
            audit_log: AuditLog::new(store.clone()),
            health: Health::new(store.clone(), engine.clone(), redis, oidc.clone()),
            limits: limits.clone(),
            authentik,
            oidc,
            frontend_tokens,
            provisioning: Provisioning::new(store.clone(), directory.clone(), auth.clone()),
            auth,
            directory,
            engine,
            client_auth: ClientAuthenticator::new(
                store.clone(),
                hashes.clone(),
                settings.api_key_cache_ttl,
            )
            .with_limits(limits.clone()),
            client_admin: ClientAdmin::new(store.clone(), hashes),
            internal_secrets: Arc::new(internal_secrets),
            settings: Arc::new(settings),
        });
        Ok(Self {
            listener,
            state,
            store,
            new_secret,
            background: vec![follower, maintenance],
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes, then finishes the requests in
    /// flight for at most the grace period (`MEMBERD_SHUTDOWN_GRACE_SECONDS`),
    /// stops the background tasks, and closes the pool, also within the
    /// grace period: a stop never hangs on a connection that is not coming
    /// back (the follower's `LISTEN` held one, and SIGTERM waited forever).
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let store = self.store.clone();
        let grace = self.state.settings.shutdown_grace;
        tracing::info!(
            addr = %self.local_addr(),
            backend = ?store.backend(),
            sessions = self.state.auth.sessions().backend(),
            "memberd listening"
        );
        if let Some(secret) = &self.new_secret {
            announce_new_secret(&store, secret).await?;
        }
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            let _ = stopping.send(());
        };
        let serve = axum::serve(
            self.listener,
            router(self.state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(signal)
        .into_future();
        tokio::pin!(serve);
        let deadline = async {
            if stopped.await.is_err() {
                return std::future::pending().await;
            }
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            served = &mut serve => served.context("serving")?,
            () = deadline => {
                tracing::warn!(grace_seconds = grace.as_secs(), "requests still in flight at the end of the grace period: stopping anyway");
            }
        }
        for task in self.background {
            task.abort();
            let _ = task.await;
        }
        if tokio::time::timeout(grace, store.close()).await.is_err() {
            tracing::warn!(
                grace_seconds = grace.as_secs(),
                "database connections still out at the end of the grace period: exiting anyway"
            );
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Picks up keys rotated by `memberd keys rotate` (another process), drops
/// retired keys from the JWKS once their tokens have expired, forgets the
/// rate limits' keys that have refilled, and hourly deletes ended sessions
/// and stale throttles.
fn spawn_maintenance(auth: Auth, limits: Limits) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(30));
        every.tick().await;
        for tick in 1u64.. {
            every.tick().await;
            if let Err(e) = auth.reload_keys().await {
                tracing::warn!(error = %e, "reloading signing keys failed");
            }
            limits.forget_idle();
            if tick % 120 == 0 {
                if let Err(e) = auth.prune().await {
                    tracing::warn!(error = %e, "pruning sessions and throttles failed");
                }
            }
        }
    })
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
