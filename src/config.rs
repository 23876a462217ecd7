//! Settings: flags, then environment (`MEMBERD_*`), then an optional TOML
//! file, then defaults. The file's keys are the flags' long names with
//! underscores; a key it does not know is an error, so a typo cannot silently
//! leave a default in force.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Redis' connect and command timeout, by default (see `Settings::redis_timeout`).
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(100);

/// How long a stop waits, by default (see `Settings::shutdown_grace`).
pub const DEFAULT_SHUTDOWN_GRACE_SECONDS: u64 = 20;

use anyhow::{Context, bail};
use ipnet::IpNet;
use serde::Deserialize;

use crate::authn::Secret;
use crate::authn::frontend::FrontendCipher;
use crate::authn::hashing::HashCost;
use crate::authn::password::{DEFAULT_MIN_PASSWORD_CHARS, MAX_PASSWORD_CHARS};
use crate::model::{PathPattern, ScopeId, ScopeType};
use crate::service::auth::CaptchaMode;
use crate::service::authentik::AuthentikSettings;
use crate::service::directory::CatalogMode;
use crate::service::oidc::OidcSettings;

pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://memberd.db";
const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
const DEFAULT_API_KEY_CACHE_SECONDS: u64 = 600;
const DEFAULT_LOGIN_MAX_FAILURES: u32 = 5;
const DEFAULT_LOCKOUT_MINUTES: u64 = 15;
const DEFAULT_AUTH_RATE_LIMIT: u32 = 300;
/// Internal secrets are compared as given: a short one could be guessed.
const MIN_SECRET_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Generates missing secrets and prints them once.
    #[default]
    Development,
    /// Refuses to start without configured secrets.
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// What the service runs with, every value resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: SocketAddr,
    pub database_url: String,
    pub environment: Environment,
    pub internal_secrets: Vec<Secret>,
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_bytes: usize,
    pub api_key_cache_ttl: Duration,
    pub log_format: LogFormat,
    /// How callers reach this service (for discovery documents); else taken from `Host`.
    pub public_url: Option<String>,
    /// Seals signing keys and TOTP secrets at rest; generated in development.
    pub key_encryption_key: Option<Secret>,
    /// Sessions and rate limits live in Redis when set, else in the database and in memory.
    pub redis_url: Option<String>,
    /// Prepended to every Redis key, so that deployments can share a Redis.
    pub redis_prefix: String,
    /// Bounds connecting to Redis and every command.
    pub redis_timeout: Duration,
    pub login_captcha: CaptchaMode,
    pub password_min_length: usize,
    pub login_max_failures: u32,
    pub lockout: Duration,
    pub password_hash_cost: HashCost,
    /// Password-grade hashes (logins and API keys: one shared pool) computed at once [default: one per core].
    pub password_hash_concurrency: Option<usize>,
    /// Whether session cookies carry `Secure` (turn off only for local http).
    pub cookie_secure: bool,
    /// Shared with front ends that embed pages and pass the user in an encrypted token.
    pub frontend_secret: Option<Secret>,
    pub frontend_cipher: FrontendCipher,
    /// The longest an embedded token may claim to live.
    pub frontend_token_max_lifetime: Duration,
    /// How long a stop waits for requests in flight, then for database
    /// connections, before exiting anyway.
    pub shutdown_grace: Duration,
    /// Paths where the user routes answer without any token (as anonymous).
    pub public_paths: Vec<PathPattern>,
    /// The identity provider whose bearer tokens `/me` accepts.
    pub oidc: Option<OidcSettings>,
    /// Authentik's admin API, for `/internal/authentik/users/ensure`.
    pub authentik: Option<AuthentikSettings>,
    /// Requests a minute one address may make to `/auth/*`.
    pub auth_rate_limit_per_minute: u32,
    /// Whether permissions must name modules and actions the catalog declares.
    pub catalog: CatalogMode,
    /// Where `/me/menus` and `/me/buttons` check permissions when the caller names no scope.
    pub menu_scope: (ScopeType, ScopeId),
}

impl Settings {
    /// Defaults for everything, on the given database: a starting point for tests and tools.
    pub fn with_database(database_url: impl Into<String>) -> Self {
        Self {
            bind: DEFAULT_BIND
                .parse()
                .expect("the default bind address parses"),
            database_url: database_url.into(),
            environment: Environment::Development,
            internal_secrets: Vec::new(),
            trusted_proxies: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            api_key_cache_ttl: Duration::from_secs(DEFAULT_API_KEY_CACHE_SECONDS),
            log_format: LogFormat::Text,
            public_url: None,
            key_encryption_key: None,
            redis_url: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            redis_timeout: DEFAULT_REDIS_TIMEOUT,
            login_captcha: CaptchaMode::default(),
            password_min_length: DEFAULT_MIN_PASSWORD_CHARS,
            login_max_failures: DEFAULT_LOGIN_MAX_FAILURES,
            lockout: Duration::from_secs(DEFAULT_LOCKOUT_MINUTES * 60),
            password_hash_cost: HashCost::default(),
            password_hash_concurrency: None,
            cookie_secure: true,
            frontend_secret: None,
            frontend_cipher: FrontendCipher::default(),
            frontend_token_max_lifetime: Duration::from_secs(
                crate::authn::frontend::DEFAULT_MAX_LIFETIME_SECONDS,
            ),
            shutdown_grace: Duration::from_secs(DEFAULT_SHUTDOWN_GRACE_SECONDS),
            public_paths: Vec::new(),
            oidc: None,
            authentik: None,
            auth_rate_limit_per_minute: DEFAULT_AUTH_RATE_LIMIT,
            catalog: CatalogMode::default(),
            menu_scope: default_menu_scope(),
        }
    }
}

/// Flags, each with its environment variable. Global, so they may be given
/// before or after the subcommand.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct SettingsArgs {
    /// TOML file with settings (keys as the flags below, with underscores).
    #[arg(long, env = "MEMBERD_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// sqlite://FILE (default sqlite://memberd.db) or postgres://USER@HOST/DB.
    #[arg(
        long,
        env = "MEMBERD_DATABASE_URL",
        global = true,
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "MEMBERD_BIND", global = true, value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    #[arg(long, env = "MEMBERD_ENVIRONMENT", global = true, value_enum)]
    pub environment: Option<Environment>,
    /// Shared secret for /internal routes; repeat (or separate with commas) to accept several during a rotation.
    #[arg(
        long = "internal-secret",
        env = "MEMBERD_INTERNAL_SECRETS",
        global = true,
        value_delimiter = ',',
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub internal_secrets: Vec<String>,
    /// Proxy (IP or CIDR) whose X-Forwarded-For is believed; repeat or separate with commas.
    #[arg(
        long = "trusted-proxy",
        env = "MEMBERD_TRUSTED_PROXIES",
        global = true,
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub trusted_proxies: Vec<String>,
    /// Largest request body accepted, in bytes [default: 65536].
    #[arg(
        long,
        env = "MEMBERD_MAX_BODY_BYTES",
        global = true,
        value_name = "BYTES"
    )]
    pub max_body_bytes: Option<usize>,
    /// How long a verified API key is remembered unused; one in use is verified again in the background [default: 600].
    #[arg(
        long,
        env = "MEMBERD_API_KEY_CACHE_SECONDS",
        global = true,
        value_name = "SECONDS"
    )]
    pub api_key_cache_seconds: Option<u64>,
    #[arg(long, env = "MEMBERD_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Base URL callers use to reach memberd, e.g. https://members.example.org (for discovery documents).
    #[arg(long, env = "MEMBERD_PUBLIC_URL", global = true, value_name = "URL")]
    pub public_url: Option<String>,
    /// 32 bytes (base64 or hex) sealing signing keys and TOTP secrets at rest.
    #[arg(
        long,
        env = "MEMBERD_KEY_ENCRYPTION_KEY",
        global = true,
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub key_encryption_key: Option<String>,
    /// redis://HOST:PORT: keep sessions in Redis, shared by every instance.
    #[arg(
        long,
        env = "MEMBERD_REDIS_URL",
        global = true,
        hide_env_values = true,
        value_name = "URL"
    )]
    pub redis_url: Option<String>,
    /// Milliseconds allowed for connecting to Redis and for each command
    /// [default: 100]; past it Redis counts as down for a second.
    #[arg(
        long,
        env = "MEMBERD_REDIS_TIMEOUT_MS",
        global = true,
        value_name = "MS"
    )]
    pub redis_timeout_ms: Option<u64>,
    /// When logins need a captcha [default: after_failures].
    #[arg(long, env = "MEMBERD_LOGIN_CAPTCHA", global = true, value_enum)]
    pub login_captcha: Option<CaptchaMode>,
    /// Shortest password accepted [default: 12].
    #[arg(
        long,
        env = "MEMBERD_PASSWORD_MIN_LENGTH",
        global = true,
        value_name = "CHARS"
    )]
    pub password_min_length: Option<usize>,
    /// Failed logins before an account is locked [default: 5].
    #[arg(
        long,
        env = "MEMBERD_LOGIN_MAX_FAILURES",
        global = true,
        value_name = "N"
    )]
    pub login_max_failures: Option<u32>,
    /// First lockout's length; each further lockout doubles it [default: 15].
    #[arg(
        long,
        env = "MEMBERD_LOCKOUT_MINUTES",
        global = true,
        value_name = "MINUTES"
    )]
    pub lockout_minutes: Option<u64>,
    /// argon2id memory per hash [default: 19456, OWASP's].
    #[arg(
        long,
        env = "MEMBERD_ARGON2_MEMORY_KIB",
        global = true,
        value_name = "KIB"
    )]
    pub argon2_memory_kib: Option<u32>,
    /// argon2id passes [default: 2].
    #[arg(
        long,
        env = "MEMBERD_ARGON2_ITERATIONS",
        global = true,
        value_name = "N"
    )]
    pub argon2_iterations: Option<u32>,
    /// Password-grade hashes (logins and API keys: one shared pool) computed at once [default: one per core].
    #[arg(
        long,
        env = "MEMBERD_PASSWORD_HASH_CONCURRENCY",
        global = true,
        value_name = "N"
    )]
    pub password_hash_concurrency: Option<usize>,
    /// Set `Secure` on session cookies [default: true; false only for local http].
    #[arg(
        long,
        env = "MEMBERD_COOKIE_SECURE",
        global = true,
        value_name = "BOOL"
    )]
    pub cookie_secure: Option<bool>,
    /// Secret shared with embedding front ends (32 bytes for gcm, 64 for cbc-hmac-sha256; base64 or hex).
    #[arg(
        long,
        env = "MEMBERD_FRONTEND_SECRET",
        global = true,
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub frontend_secret: Option<String>,
    /// How embedded tokens are encrypted [default: gcm].
    #[arg(long, env = "MEMBERD_FRONTEND_CIPHER", global = true, value_enum)]
    pub frontend_cipher: Option<FrontendCipher>,
    /// The longest an embedded token may claim to live [default: 43200].
    #[arg(
        long,
        env = "MEMBERD_FRONTEND_TOKEN_MAX_SECONDS",
        global = true,
        value_name = "SECONDS"
    )]
    pub frontend_token_max_seconds: Option<u64>,
    /// How long a stop waits for requests in flight, then for database
    /// connections [default: 20]; a second signal exits at once.
    #[arg(
        long,
        env = "MEMBERD_SHUTDOWN_GRACE_SECONDS",
        global = true,
        value_name = "SECONDS"
    )]
    pub shutdown_grace_seconds: Option<u64>,
    /// Path (glob) where user routes need no token; repeat or separate with commas.
    #[arg(
        long = "public-path",
        env = "MEMBERD_PUBLIC_PATHS",
        global = true,
        value_delimiter = ',',
        value_name = "GLOB"
    )]
    pub public_paths: Vec<String>,
    /// The identity provider (discovery at {issuer}/.well-known/openid-configuration).
    #[arg(long, env = "MEMBERD_OIDC_ISSUER", global = true, value_name = "URL")]
    pub oidc_issuer: Option<String>,
    /// The provider's JWKS, when there is no discovery.
    #[arg(long, env = "MEMBERD_OIDC_JWKS_URL", global = true, value_name = "URL")]
    pub oidc_jwks_url: Option<String>,
    /// The `aud` provider tokens must carry; required unless
    /// MEMBERD_OIDC_ALLOW_ANY_AUDIENCE=true.
    #[arg(long, env = "MEMBERD_OIDC_AUDIENCE", global = true, value_name = "AUD")]
    pub oidc_audience: Option<String>,
    /// Accept provider tokens whatever their `aud` (not recommended: a token
    /// the provider issued to any other application would open memberd).
    #[arg(long, env = "MEMBERD_OIDC_ALLOW_ANY_AUDIENCE", global = true)]
    pub oidc_allow_any_audience: bool,
    /// With MEMBERD_OIDC_JWKS_URL and no MEMBERD_OIDC_ISSUER: accept tokens
    /// whatever their `iss` (not recommended).
    #[arg(long, env = "MEMBERD_OIDC_ALLOW_ANY_ISSUER", global = true)]
    pub oidc_allow_any_issuer: bool,
    /// Accepted algorithms [default: RS256,ES256,EdDSA,PS256; never none or HMAC].
    #[arg(
        long = "oidc-algorithm",
        env = "MEMBERD_OIDC_ALGORITHMS",
        global = true,
        value_delimiter = ',',
        value_name = "ALG"
    )]
    pub oidc_algorithms: Vec<String>,
    /// Clock leeway for exp, nbf and iat [default: 60].
    #[arg(
        long,
        env = "MEMBERD_OIDC_LEEWAY_SECONDS",
        global = true,
        value_name = "SECONDS"
    )]
    pub oidc_leeway_seconds: Option<u64>,
    /// Authentik's base URL, for ensuring users there (with the admin token).
    #[arg(
        long,
        env = "MEMBERD_AUTHENTIK_BASE_URL",
        global = true,
        value_name = "URL"
    )]
    pub authentik_base_url: Option<String>,
    /// An Authentik API token allowed to manage users.
    #[arg(
        long,
        env = "MEMBERD_AUTHENTIK_ADMIN_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub authentik_admin_token: Option<String>,
    /// How long a call to Authentik may take [default: 10].
    #[arg(
        long,
        env = "MEMBERD_AUTHENTIK_TIMEOUT_SECONDS",
        global = true,
        value_name = "SECONDS"
    )]
    pub authentik_timeout_seconds: Option<u64>,
    /// Requests a minute one address may make to /auth/* [default: 300].
    #[arg(
        long,
        env = "MEMBERD_AUTH_RATE_LIMIT",
        global = true,
        value_name = "PER_MINUTE"
    )]
    pub auth_rate_limit: Option<u32>,
    /// `open` accepts modules and actions the catalog does not declare; `strict` refuses them [default: open].
    #[arg(long, env = "MEMBERD_CATALOG", global = true, value_enum)]
    pub catalog: Option<CatalogMode>,
    /// Prepended to every Redis key [default: memberd:].
    #[arg(
        long,
        env = "MEMBERD_REDIS_PREFIX",
        global = true,
        value_name = "PREFIX"
    )]
    pub redis_prefix: Option<String>,
    /// The scope menus are checked in when a request names none, as TYPE:ID [default: memberd:console].
    #[arg(
        long,
        env = "MEMBERD_MENU_SCOPE",
        global = true,
        value_name = "TYPE:ID"
    )]
    pub menu_scope: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    database_url: Option<String>,
    bind: Option<SocketAddr>,
    environment: Option<Environment>,
    internal_secrets: Option<Vec<Secret>>,
    trusted_proxies: Option<Vec<String>>,
    max_body_bytes: Option<usize>,
    api_key_cache_seconds: Option<u64>,
    log_format: Option<LogFormat>,
    public_url: Option<String>,
    key_encryption_key: Option<Secret>,
    redis_url: Option<String>,
    login_captcha: Option<CaptchaMode>,
    password_min_length: Option<usize>,
    login_max_failures: Option<u32>,
    lockout_minutes: Option<u64>,
    argon2_memory_kib: Option<u32>,
    argon2_iterations: Option<u32>,
    password_hash_concurrency: Option<usize>,
    cookie_secure: Option<bool>,
    frontend_secret: Option<Secret>,
    frontend_cipher: Option<FrontendCipher>,
    public_paths: Option<Vec<String>>,
    oidc_issuer: Option<String>,
    oidc_jwks_url: Option<String>,
    oidc_audience: Option<String>,
    oidc_algorithms: Option<Vec<String>>,
    oidc_leeway_seconds: Option<u64>,
    authentik_base_url: Option<String>,
    authentik_admin_token: Option<Secret>,
    authentik_timeout_seconds: Option<u64>,
    auth_rate_limit: Option<u32>,
    catalog: Option<CatalogMode>,
    menu_scope: Option<String>,
    redis_prefix: Option<String>,
    redis_timeout_ms: Option<u64>,
    frontend_token_max_seconds: Option<u64>,
    shutdown_grace_seconds: Option<u64>,
    oidc_allow_any_issuer: Option<bool>,
    oidc_allow_any_audience: Option<bool>,
}

pub const DEFAULT_REDIS_PREFIX: &str = "memberd:";

fn default_menu_scope() -> (ScopeType, ScopeId) {
    (
        ScopeType::parse("memberd").expect("a valid scope type"),
        ScopeId::parse("console").expect("a valid scope id"),
    )
}

/// `TYPE:ID`, split at the first colon.
fn parse_menu_scope(text: &str) -> anyhow::Result<(ScopeType, ScopeId)> {
    let (scope_type, scope_id) = text
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("menu_scope: expected TYPE:ID, got {text:?}"))?;
    Ok((
        ScopeType::parse(scope_type).map_err(|e| anyhow::anyhow!("menu_scope: {e}"))?,
        ScopeId::parse(scope_id).map_err(|e| anyhow::anyhow!("menu_scope: {e}"))?,
    ))
}

fn read_file(path: &Path) -> anyhow::Result<FileSettings> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("in {}", path.display()))
}

fn parse_proxy(s: &str) -> anyhow::Result<IpNet> {
    crate::model::parse_ip_net(s).context("trusted proxy")
}

/// A list given by flags or environment replaces the file's, rather than adding to it.
fn flags_or_file<T>(flags: Vec<T>, file: Option<Vec<T>>) -> Vec<T> {
    if flags.is_empty() {
        file.unwrap_or_default()
    } else {
        flags
    }
}

impl SettingsArgs {
    pub fn resolve(&self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileSettings::default(),
        };
        let defaults = Settings::with_database(DEFAULT_DATABASE_URL);

        let flag_secrets = self.internal_secrets.iter().map(Secret::new).collect();
        let internal_secrets: Vec<Secret> = flags_or_file(flag_secrets, file.internal_secrets)
            .into_iter()
            .filter(|s| !s.expose().trim().is_empty())
            .collect();
        if internal_secrets
            .iter()
            .any(|s| s.expose().chars().count() < MIN_SECRET_LEN)
        {
            bail!("every internal secret must be at least {MIN_SECRET_LEN} characters long");
        }

        let proxies = flags_or_file(self.trusted_proxies.clone(), file.trusted_proxies);
        let trusted_proxies = proxies
            .iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| parse_proxy(p))
            .collect::<anyhow::Result<_>>()?;

        let max_body_bytes = self
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(defaults.max_body_bytes);
        if max_body_bytes < 1024 {
            bail!("max_body_bytes must be at least 1024");
        }

        let password_min_length = self
            .password_min_length
            .or(file.password_min_length)
            .unwrap_or(DEFAULT_MIN_PASSWORD_CHARS);
        if !(8..=MAX_PASSWORD_CHARS).contains(&password_min_length) {
            bail!("password_min_length must be between 8 and {MAX_PASSWORD_CHARS}");
        }
        let login_max_failures = self
            .login_max_failures
            .or(file.login_max_failures)
            .unwrap_or(DEFAULT_LOGIN_MAX_FAILURES);
        if login_max_failures == 0 {
            bail!("login_max_failures must be at least 1");
        }
        let defaults_cost = HashCost::default();
        let password_hash_cost = HashCost {
            memory_kib: self
                .argon2_memory_kib
                .or(file.argon2_memory_kib)
                .unwrap_or(defaults_cost.memory_kib),
            iterations: self
                .argon2_iterations
                .or(file.argon2_iterations)
                .unwrap_or(defaults_cost.iterations),
            parallelism: defaults_cost.parallelism,
        };
        let key_encryption_key = self
            .key_encryption_key
            .clone()
            .map(Secret::new)
            .or(file.key_encryption_key)
            .filter(|k| !k.expose().trim().is_empty());

        let public_paths = flags_or_file(self.public_paths.clone(), file.public_paths)
            .into_iter()
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                PathPattern::parse(p.trim().to_owned())
                    .with_context(|| format!("public path {p:?}"))
            })
            .collect::<anyhow::Result<_>>()?;

        let oidc_issuer = self
            .oidc_issuer
            .clone()
            .or(file.oidc_issuer)
            .filter(|s| !s.trim().is_empty());
        let oidc_jwks_url = self
            .oidc_jwks_url
            .clone()
            .or(file.oidc_jwks_url)
            .filter(|s| !s.trim().is_empty());
        let oidc = if oidc_issuer.is_some() || oidc_jwks_url.is_some() {
            let names = flags_or_file(self.oidc_algorithms.clone(), file.oidc_algorithms);
            let audience = self
                .oidc_audience
                .clone()
                .or(file.oidc_audience)
                .filter(|s| !s.trim().is_empty());
            // Issuer and audience checks are on unless turned off by name:
            // without them any token the provider signed, for any
            // application or from any tenant sharing its keys, would do.
            if oidc_issuer.is_none() {
                anyhow::ensure!(
                    self.oidc_allow_any_issuer || file.oidc_allow_any_issuer == Some(true),
                    "MEMBERD_OIDC_JWKS_URL is set without MEMBERD_OIDC_ISSUER: set the issuer provider tokens must carry, \
                     or MEMBERD_OIDC_ALLOW_ANY_ISSUER=true to accept any"
                );
                tracing::warn!(
                    "provider tokens are accepted from any issuer (MEMBERD_OIDC_ALLOW_ANY_ISSUER)"
                );
            }
            if audience.is_none() {
                anyhow::ensure!(
                    self.oidc_allow_any_audience || file.oidc_allow_any_audience == Some(true),
                    "MEMBERD_OIDC_AUDIENCE is not set: set the audience provider tokens must carry (memberd's client id at the provider), \
                     or MEMBERD_OIDC_ALLOW_ANY_AUDIENCE=true to accept any"
                );
                tracing::warn!(
                    "provider tokens are accepted for any audience (MEMBERD_OIDC_ALLOW_ANY_AUDIENCE)"
                );
            }
            Some(OidcSettings {
                issuer: oidc_issuer,
                jwks_url: oidc_jwks_url,
                audience,
                algorithms: OidcSettings::parse_algorithms(&names)
                    .map_err(|e| anyhow::anyhow!("oidc_algorithms: {e}"))?,
                leeway: Duration::from_secs(
                    self.oidc_leeway_seconds
                        .or(file.oidc_leeway_seconds)
                        .unwrap_or(60),
                ),
            })
        } else {
            None
        };

        let authentik_base_url = self
            .authentik_base_url
            .clone()
            .or(file.authentik_base_url)
            .filter(|s| !s.trim().is_empty());
        let authentik_admin_token = self
            .authentik_admin_token
            .clone()
            .map(Secret::new)
            .or(file.authentik_admin_token)
            .filter(|s| !s.expose().trim().is_empty());
        let authentik = match (authentik_base_url, authentik_admin_token) {
            (Some(base_url), Some(admin_token)) => Some(AuthentikSettings {
                base_url,
                admin_token,
                timeout: Duration::from_secs(
                    self.authentik_timeout_seconds
                        .or(file.authentik_timeout_seconds)
                        .unwrap_or(10)
                        .max(1),
                ),
            }),
            (None, None) => None,
            _ => bail!("set both authentik_base_url and authentik_admin_token, or neither"),
        };

        let menu_scope = match self.menu_scope.clone().or(file.menu_scope) {
            Some(text) => parse_menu_scope(&text)?,
            None => default_menu_scope(),
        };
        Ok(Settings {
            catalog: self.catalog.or(file.catalog).unwrap_or_default(),
            redis_prefix: self
                .redis_prefix
                .clone()
                .or(file.redis_prefix)
                .unwrap_or_else(|| DEFAULT_REDIS_PREFIX.to_owned()),
            menu_scope,
            auth_rate_limit_per_minute: self
                .auth_rate_limit
                .or(file.auth_rate_limit)
                .unwrap_or(DEFAULT_AUTH_RATE_LIMIT)
                .max(1),
            authentik,
            oidc,
            frontend_secret: self
                .frontend_secret
                .clone()
                .map(Secret::new)
                .or(file.frontend_secret)
                .filter(|s| !s.expose().trim().is_empty()),
            frontend_cipher: self
                .frontend_cipher
                .or(file.frontend_cipher)
                .unwrap_or_default(),
            shutdown_grace: Duration::from_secs(
                self.shutdown_grace_seconds
                    .or(file.shutdown_grace_seconds)
                    .unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECONDS),
            ),
            frontend_token_max_lifetime: Duration::from_secs(
                self.frontend_token_max_seconds
                    .or(file.frontend_token_max_seconds)
                    .unwrap_or(crate::authn::frontend::DEFAULT_MAX_LIFETIME_SECONDS)
                    .max(1),
            ),
            public_paths,
            key_encryption_key,
            redis_url: self
                .redis_url
                .clone()
                .or(file.redis_url)
                .filter(|u| !u.trim().is_empty()),
            redis_timeout: self
                .redis_timeout_ms
                .or(file.redis_timeout_ms)
                .map_or(DEFAULT_REDIS_TIMEOUT, |ms| Duration::from_millis(ms.max(1))),
            login_captcha: self
                .login_captcha
                .or(file.login_captcha)
                .unwrap_or_default(),
            password_min_length,
            login_max_failures,
            lockout: Duration::from_secs(
                60 * self
                    .lockout_minutes
                    .or(file.lockout_minutes)
                    .unwrap_or(DEFAULT_LOCKOUT_MINUTES)
                    .max(1),
            ),
            password_hash_cost,
            password_hash_concurrency: self
                .password_hash_concurrency
                .or(file.password_hash_concurrency)
                .filter(|n| *n > 0),
            cookie_secure: self.cookie_secure.or(file.cookie_secure).unwrap_or(true),
            bind: self.bind.or(file.bind).unwrap_or(defaults.bind),
            database_url: self
                .database_url
                .clone()
                .or(file.database_url)
                .unwrap_or(defaults.database_url),
            environment: self.environment.or(file.environment).unwrap_or_default(),
            internal_secrets,
            trusted_proxies,
            max_body_bytes,
            api_key_cache_ttl: self
                .api_key_cache_seconds
                .or(file.api_key_cache_seconds)
                .map(Duration::from_secs)
                .unwrap_or(defaults.api_key_cache_ttl),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            public_url: self.public_url.clone().or(file.public_url),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(toml: &str) -> (tempfile::TempDir, SettingsArgs) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memberd.toml");
        std::fs::write(&path, toml).unwrap();
        (
            dir,
            SettingsArgs {
                config: Some(path),
                ..Default::default()
            },
        )
    }

    const EXAMPLE: &str = include_str!("../deploy/memberd.toml");

    /// The shipped example states memberd's defaults: the file resolves to
    /// exactly what no file does.
    #[test]
    fn the_example_file_states_the_defaults() {
        let (_dir, args) = with_file(EXAMPLE);
        let from_example = args.resolve().unwrap();
        let defaults = SettingsArgs::default().resolve().unwrap();
        assert_eq!(format!("{from_example:?}"), format!("{defaults:?}"));
    }

    /// The settings the example leaves commented out are spelled as memberd reads them.
    #[test]
    fn the_example_files_commented_settings_are_real_keys() {
        let uncommented: String = EXAMPLE
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(key, _)| {
                        key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    }) =>
                {
                    rest
                }
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(uncommented.contains("\nredis_url = "), "{uncommented}");
        let (dir, _) = with_file(&uncommented);
        read_file(&dir.path().join("memberd.toml")).unwrap();
    }

    #[test]
    fn defaults_apply_without_anything() {
        let s = SettingsArgs::default().resolve().unwrap();
        assert_eq!(s.bind.to_string(), DEFAULT_BIND);
        assert_eq!(s.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(s.environment, Environment::Development);
        assert!(s.internal_secrets.is_empty());
    }

    #[test]
    fn flags_win_over_the_file() {
        let (_dir, mut args) = with_file(
            "bind = \"0.0.0.0:9000\"\ndatabase_url = \"sqlite://other.db\"\n\
             internal_secrets = [\"file-secret-0123456789\"]\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
        );
        args.database_url = Some("postgres://db/memberd".into());
        let s = args.resolve().unwrap();
        assert_eq!(s.bind.to_string(), "0.0.0.0:9000");
        assert_eq!(s.database_url, "postgres://db/memberd");
        assert_eq!(s.internal_secrets[0].expose(), "file-secret-0123456789");
        assert_eq!(s.trusted_proxies[0].to_string(), "10.0.0.0/8");
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        let (_dir, args) = with_file("databse_url = \"sqlite://typo.db\"\n");
        let err = format!("{:#}", args.resolve().unwrap_err());
        assert!(err.contains("databse_url"), "{err}");
    }

    #[test]
    fn short_secrets_and_bad_proxies_are_refused() {
        let args = SettingsArgs {
            internal_secrets: vec!["short".into()],
            ..Default::default()
        };
        assert!(args.resolve().is_err());
        let args = SettingsArgs {
            trusted_proxies: vec!["not-an-ip".into()],
            ..Default::default()
        };
        assert!(args.resolve().is_err());
        let args = SettingsArgs {
            trusted_proxies: vec!["192.0.2.1".into()],
            ..Default::default()
        };
        assert_eq!(
            args.resolve().unwrap().trusted_proxies[0].to_string(),
            "192.0.2.1/32"
        );
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let args = SettingsArgs {
            config: Some("/nonexistent/memberd.toml".into()),
            ..Default::default()
        };
        assert!(args.resolve().is_err());
    }
}
