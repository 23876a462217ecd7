//! The `memberd` command line.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use std::path::PathBuf;

use crate::app::{
    Application, hash_pool, key_encryption_key, login_settings, open_store, shutdown_signal,
};
use crate::audit;
use crate::authn::Secret;
use crate::authn::api_key::HashAlgorithm;
use crate::authz::casbin::{Enforcer, Matcher, Model, Policy};
use crate::config::{LogFormat, SettingsArgs};
use crate::model::{
    ApiClient, AuthentikSub, Capability, ClientName, ClientStatus, DisplayName, Email, Origin,
    PathPattern, ScopeType, Username,
};
use crate::service::ServiceError;
use crate::service::access::Engine;
use crate::service::auth::{Auth, AuthError, NewAccount, rotate_signing_key};
use crate::service::casbin::default_scope_type;
use crate::service::clients::{ClientAdmin, NewClient};
use crate::service::directory::Directory;
use crate::service::sessions::SessionStore;
use crate::store::{ChainReport, Store};
use crate::telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "memberd",
    version,
    about = "memberd: users, permissions and API clients for an organisation"
)]
pub struct Cli {
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API clients (the callers of /admin routes).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Casbin compatibility: decide, import and export Casbin policies.
    #[command(subcommand)]
    Casbin(CasbinCommand),
    /// Local accounts of operators.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The keys that sign memberd's access tokens.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write the whole state (users, grants, roles, rules, clients, accounts,
    /// audit chain) as JSON, read at one moment.
    Export {
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Load a state written by `memberd export` into this (empty) database.
    Import {
        /// The export document.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Walk the hash chain and report the first record that breaks it
    /// (exit status 1 when the chain is broken).
    Verify,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an operator: a local account holding the built-in admin role.
    Create(AdminCreate),
}

#[derive(Debug, Args)]
struct AdminCreate {
    #[arg(long)]
    username: String,
    /// Read the password from standard input (one line) instead of a prompt.
    #[arg(long)]
    password_stdin: bool,
    #[arg(long)]
    email: Option<String>,
    #[arg(long)]
    display_name: Option<String>,
    /// Link the account to this identity-provider subject [default: local:USERNAME].
    #[arg(long = "sub", value_name = "AUTHENTIK_SUB")]
    authentik_sub: Option<String>,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Start signing with a new key; the old one stays published until its tokens expire.
    Rotate,
    /// List the signing keys.
    List,
}

#[derive(Debug, Subcommand)]
enum CasbinCommand {
    /// Decide requests against a Casbin model and policy, without any database;
    /// prints true or false, one line per request.
    Enforce(EnforceArgs),
    /// Load a Casbin policy into memberd: p rules become role or user
    /// permissions, g rules role assignments and inheritance, domains scopes.
    /// Decisions are compared with Casbin's before anything is written.
    Import(ImportArgs),
    /// Write memberd's policy as Casbin CSV (for the model last imported, or --model).
    Export(ExportArgs),
}

#[derive(Debug, Args)]
struct ImportArgs {
    #[arg(long, value_name = "MODEL.conf")]
    model: PathBuf,
    #[arg(long, value_name = "POLICY.csv")]
    policy: PathBuf,
    /// The scope type domains map to [default: domain, or casbin for models without domains].
    #[arg(long, value_name = "TYPE")]
    scope_type: Option<String>,
    /// How long to spend comparing decisions with Casbin's before writing.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    verify_seconds: u64,
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// The model to write the policy for [default: the model last imported].
    #[arg(long, value_name = "MODEL.conf")]
    model: Option<PathBuf>,
    #[arg(long, value_name = "TYPE")]
    scope_type: Option<String>,
    /// Where to write the CSV [default: standard output].
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CasbinFiles {
    /// The model (.conf).
    #[arg(long, value_name = "MODEL.conf")]
    model: PathBuf,
    /// The policy (.csv).
    #[arg(long, value_name = "POLICY.csv")]
    policy: Option<PathBuf>,
    /// Role links matched with a function, as Casbin's AddNamedMatchingFunc: g=keyMatch2 (repeatable).
    #[arg(long = "role-match", value_name = "G=FUNCTION")]
    role_match: Vec<String>,
    /// Role domains matched with a function, as AddNamedDomainMatchingFunc: g=keyMatch2 (repeatable).
    #[arg(long = "domain-match", value_name = "G=FUNCTION")]
    domain_match: Vec<String>,
}

impl CasbinFiles {
    fn enforcer(&self) -> anyhow::Result<Enforcer> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
        };
        let model =
            Model::parse(&read(&self.model)?).with_context(|| self.model.display().to_string())?;
        let policy = match &self.policy {
            Some(path) => {
                Policy::parse(&read(path)?, &model).with_context(|| path.display().to_string())?
            }
            None => Policy::default(),
        };
        let mut enforcer = Enforcer::new(model, policy)?;
        let split = |spec: &str| -> anyhow::Result<(String, Matcher)> {
            let (g, function) = spec
                .split_once('=')
                .with_context(|| format!("{spec:?}: expected G=FUNCTION"))?;
            Ok((g.trim().to_owned(), Matcher::parse(function.trim())?))
        };
        for spec in &self.role_match {
            let (g, matcher) = split(spec)?;
            enforcer.set_role_matching(&g, matcher)?;
        }
        for spec in &self.domain_match {
            let (g, matcher) = split(spec)?;
            enforcer.set_domain_matching(&g, matcher)?;
        }
        Ok(enforcer)
    }
}

#[derive(Debug, Args)]
struct EnforceArgs {
    #[command(flatten)]
    files: CasbinFiles,
    /// A request, its fields separated by commas: "alice,data1,read" (repeatable).
    #[arg(long = "request", value_name = "FIELDS")]
    requests: Vec<String>,
    /// A file of requests, one per line (# comments and blank lines are skipped).
    #[arg(long = "requests", value_name = "FILE")]
    requests_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Create a client; its API key is printed once and only its hash is kept.
    Create(CreateClient),
    /// List clients.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Refuse the client's requests from now on.
    Disable { client_key: String },
    /// Accept the client's requests again.
    Enable { client_key: String },
    /// Replace the client's API key; the old key stops working at once.
    Rotate {
        client_key: String,
        #[arg(long, value_enum, default_value_t)]
        hash: HashAlgorithm,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct CreateClient {
    #[arg(long)]
    name: String,
    /// Origin allowed to call (repeatable); none means any.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// IP or CIDR allowed to call (repeatable); none means any.
    #[arg(long = "allow-ip", value_name = "CIDR")]
    allow_ips: Vec<String>,
    /// Path pattern allowed (repeatable; * within a segment, ** across); none means any.
    #[arg(long = "allow-path", value_name = "GLOB")]
    allow_paths: Vec<String>,
    /// When the client stops working (RFC 3339, e.g. 2027-01-01T00:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    expires_at: Option<String>,
    /// Requests per minute the client may make.
    #[arg(long = "rate-limit", value_name = "PER_MINUTE")]
    rate_limit: Option<u32>,
    /// What the client may do (repeatable: check, read, users:write,
    /// grants:write, roles:write, scim, admin); none means check only.
    #[arg(long = "capability", value_name = "CAPABILITY", value_enum)]
    capabilities: Vec<Capability>,
    #[arg(long, value_enum, default_value_t)]
    hash: HashAlgorithm,
    #[arg(long)]
    json: bool,
}

impl CreateClient {
    fn parse(self) -> anyhow::Result<(NewClient, bool)> {
        let field = |what: &str, value: &str| format!("--{what} {value:?}");
        let new = NewClient {
            name: ClientName::parse(self.name.clone())
                .with_context(|| field("name", &self.name))?,
            allowed_origins: self
                .allow_origins
                .iter()
                .map(|o| Origin::normalize(o).with_context(|| field("allow-origin", o)))
                .collect::<anyhow::Result<_>>()?,
            allowed_ips: self
                .allow_ips
                .iter()
                .map(|ip| crate::model::parse_ip_net(ip).with_context(|| field("allow-ip", ip)))
                .collect::<anyhow::Result<_>>()?,
            allowed_paths: self
                .allow_paths
                .iter()
                .map(|p| PathPattern::parse(p.clone()).with_context(|| field("allow-path", p)))
                .collect::<anyhow::Result<_>>()?,
            expires_at: self
                .expires_at
                .as_deref()
                .map(|t| {
                    OffsetDateTime::parse(t, &Rfc3339).with_context(|| {
                        format!("{}: not an RFC 3339 time", field("expires-at", t))
                    })
                })
                .transpose()?,
            rate_limit_per_minute: self.rate_limit,
            capabilities: self.capabilities,
            hash: self.hash,
        };
        Ok((new, self.json))
    }
}

pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    // What the command line changes is recorded as the CLI's doing.
    let origin = audit::Origin {
        actor: audit::Actor::cli(),
        ip: None,
        request_id: None,
    };
    match audit::scope(origin, execute(cli)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memberd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings.resolve()?;
    match cli.command {
        Command::Serve => {
            telemetry::init(settings.log_format, "info");
            let app = Application::build(settings).await?;
            app.run_until(async {
                shutdown_signal().await;
                // A second signal does not wait for the grace period.
                tokio::spawn(async {
                    shutdown_signal().await;
                    tracing::warn!("second signal: exiting at once");
                    std::process::exit(130);
                });
            })
            .await
        }
        Command::Migrate => {
            telemetry::init(settings.log_format, "warn");
            open_store(&settings.database_url).await?.close().await;
            println!("migrations applied");
            Ok(())
        }
        Command::Casbin(CasbinCommand::Enforce(args)) => enforce(args),
        Command::Casbin(CasbinCommand::Import(args)) => {
            telemetry::init(LogFormat::Text, "warn");
            let store = open_store(&settings.database_url).await?;
            let result = casbin_import(&store, args).await;
            store.close().await;
            result
        }
        Command::Casbin(CasbinCommand::Export(args)) => {
            telemetry::init(LogFormat::Text, "warn");
            let store = open_store(&settings.database_url).await?;
            let result = casbin_export(&store, args).await;
            store.close().await;
            result
        }
        Command::Admin(AdminCommand::Create(args)) => {
            telemetry::init(LogFormat::Text, "warn");
            let store = open_store(&settings.database_url).await?;
            let result = admin_create(&settings, &store, args).await;
            store.close().await;
            result
        }
        Command::Keys(command) => {
            telemetry::init(LogFormat::Text, "warn");
            let store = open_store(&settings.database_url).await?;
            let result = keys_command(&settings, &store, command).await;
            store.close().await;
            result
        }
        Command::Export { output } => {
            telemetry::init(LogFormat::Text, "warn");
            let store = open_store(&settings.database_url).await?;
            let result = export(&store, output).await;
            store.close().await;
            result
        }
        Command::Import { file } => {
            telemetry::init(LogFormat::Text, "warn");
            let store = open_store(&settings.database_url).await?;
            let result = import(&store, &file).await;
            store.close().await;
            result
        }
        Command::Audit(AuditCommand::Verify) => {
            telemetry::init(LogFormat::Text, "warn");
            let store = open_store(&settings.database_url).await?;
            let report = store.verify_audit_chain().await;
            store.close().await;
            match report? {
                ChainReport::Intact { records } => {
                    println!("audit chain intact: {records} records");
                    Ok(())
                }
                ChainReport::Broken(at) => bail!("audit chain broken: {at}"),
            }
        }
        Command::Client(command) => {
            telemetry::init(LogFormat::Text, "warn");
            let store = open_store(&settings.database_url).await?;
            let admin = ClientAdmin::new(store.clone(), hash_pool(&settings)?);
            let result = client_command(&admin, command).await;
            store.close().await;
            result
        }
    }
}

async fn export(store: &Store, output: Option<PathBuf>) -> anyhow::Result<()> {
    let revision = match &output {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut out = std::io::BufWriter::new(file);
            let revision = store.export(&mut out).await?;
            std::io::Write::flush(&mut out)?;
            revision
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let revision = store.export(&mut out).await?;
            std::io::Write::flush(&mut out)?;
            revision
        }
    };
    eprintln!("exported the state at revision {revision}");
    Ok(())
}

async fn import(store: &Store, file: &PathBuf) -> anyhow::Result<()> {
    let text = read_file(file)?;
    let document: crate::store::ExportDocument = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a memberd export", file.display()))?;
    let imported = store.import(&document).await?;
    let counts: Vec<String> = imported
        .rows
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(table, n)| format!("{n} {table}"))
        .collect();
    println!(
        "imported the state at revision {}: {}",
        imported.revision,
        counts.join(", ")
    );
    // What was moved must still hold together: the chain, and the policy.
    match store.verify_audit_chain().await? {
        ChainReport::Intact { records } => println!("audit chain intact: {records} records"),
        ChainReport::Broken(at) => bail!("the imported audit chain is broken: {at}"),
    }
    let engine = Engine::load(store).await.map_err(describe)?;
    println!("policy compiled at revision {}", engine.revision());
    Ok(())
}

fn describe(e: ServiceError) -> anyhow::Error {
    match e {
        ServiceError::NotFound("client") => anyhow::anyhow!("no client with that client key"),
        other => other.into(),
    }
}

fn print_key(client_key: &str, api_key: &Secret, client: Option<&ApiClient>, as_json: bool) {
    if as_json {
        let mut out = json!({ "client_key": client_key, "api_key": api_key.expose() });
        if let Some(client) = client {
            out["client"] = serde_json::to_value(client).expect("a client serialises");
        }
        println!("{out}");
    } else {
        println!("client_key: {client_key}");
        println!("api_key:    {}", api_key.expose());
        println!();
        println!("The API key is shown only now; memberd keeps only its hash.");
        println!("Send both with each request: X-Client-Key and X-API-Key.");
    }
}

async fn client_command(admin: &ClientAdmin, command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Create(args) => {
            let (new, as_json) = args.parse()?;
            let (client, api_key) = admin.create(new).await.map_err(describe)?;
            print_key(&client.client_key, &api_key, Some(&client), as_json);
        }
        ClientCommand::List { json } => {
            let clients = admin.list().await.map_err(describe)?;
            if json {
                println!("{}", serde_json::to_string(&clients)?);
            } else {
                println!(
                    "{:<28} {:<9} {:<25} {:<25} {:<30} NAME",
                    "CLIENT_KEY", "STATUS", "EXPIRES_AT", "LAST_USED_AT", "CAPABILITIES"
                );
                let when = |t: Option<OffsetDateTime>| {
                    t.and_then(|t| t.format(&Rfc3339).ok())
                        .unwrap_or_else(|| "-".into())
                };
                for c in clients {
                    let capabilities: Vec<&str> =
                        c.capabilities.iter().map(|c| c.as_str()).collect();
                    println!(
                        "{:<28} {:<9} {:<25} {:<25} {:<30} {}",
                        c.client_key,
                        c.status.as_str(),
                        when(c.expires_at),
                        when(c.last_used_at),
                        capabilities.join(","),
                        c.name
                    );
                }
            }
        }
        ClientCommand::Disable { client_key } => {
            admin
                .set_status(&client_key, ClientStatus::Disabled)
                .await
                .map_err(describe)?;
            println!("client {client_key} disabled");
        }
        ClientCommand::Enable { client_key } => {
            admin
                .set_status(&client_key, ClientStatus::Active)
                .await
                .map_err(describe)?;
            println!("client {client_key} enabled");
        }
        ClientCommand::Rotate {
            client_key,
            hash,
            json,
        } => {
            let api_key = admin.rotate(&client_key, hash).await.map_err(describe)?;
            print_key(&client_key, &api_key, None, json);
        }
    }
    Ok(())
}

fn enforce(args: EnforceArgs) -> anyhow::Result<()> {
    let enforcer = args.files.enforcer()?;
    let mut requests = args.requests;
    if let Some(path) = &args.requests_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        requests.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    if requests.is_empty() {
        anyhow::bail!("no requests: give --request \"alice,data1,read\" or --requests FILE");
    }
    let mut out = String::new();
    for request in &requests {
        let fields: Vec<&str> = request.split(',').map(str::trim).collect();
        let allowed = enforcer
            .enforce(&fields)
            .with_context(|| format!("request {request:?}"))?;
        out.push_str(if allowed { "true\n" } else { "false\n" });
    }
    print!("{out}");
    Ok(())
}

fn read_file(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn scope_type(raw: Option<&str>) -> anyhow::Result<Option<ScopeType>> {
    raw.map(|t| ScopeType::parse(t).with_context(|| format!("--scope-type {t:?}")))
        .transpose()
}

async fn casbin_import(store: &Store, args: ImportArgs) -> anyhow::Result<()> {
    let model_text = read_file(&args.model)?;
    let model = Model::parse(&model_text).with_context(|| args.model.display().to_string())?;
    let policy = Policy::parse(&read_file(&args.policy)?, &model)
        .with_context(|| args.policy.display().to_string())?;
    let enforcer = Enforcer::new(model.clone(), policy)?;
    let scope_type =
        scope_type(args.scope_type.as_deref())?.unwrap_or_else(|| default_scope_type(&model));
    let verify_for = std::time::Duration::from_secs(args.verify_seconds);
    let report =
        crate::service::casbin::import(store, &enforcer, &model_text, &scope_type, verify_for)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let p = &report.plan;
    println!(
        "imported {} users, {} roles, {} role permissions, {} direct grants, {} role assignments at revision {}",
        p.users.len(),
        p.roles.len(),
        p.role_permissions.len(),
        p.grants.len(),
        p.assignments.len(),
        report.revision
    );
    println!(
        "compared {} of {} requests with Casbin's decisions: all equal; scopes are of type {scope_type}",
        report.verified.compared, report.verified.of
    );
    println!("running memberd serve processes follow the import within a second");
    Ok(())
}

async fn casbin_export(store: &Store, args: ExportArgs) -> anyhow::Result<()> {
    let model = args.model.as_ref().map(read_file).transpose()?;
    let scope_type = scope_type(args.scope_type.as_deref())?;
    let csv = crate::service::casbin::export(store, model.as_deref(), scope_type.as_ref())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    match &args.output {
        Some(path) => {
            std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{csv}"),
    }
    Ok(())
}

fn read_password(from_stdin: bool) -> anyhow::Result<Secret> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        return Ok(Secret::new(line.trim_end_matches(['\r', '\n'])));
    }
    // Without a terminal there is nothing to prompt on: say what to do.
    let no_terminal =
        "reading the password from the terminal (none here? pipe it in with --password-stdin)";
    let first = rpassword::prompt_password("Password: ").context(no_terminal)?;
    let again = rpassword::prompt_password("Password again: ").context(no_terminal)?;
    if first != again {
        anyhow::bail!("the passwords differ");
    }
    Ok(Secret::new(first))
}

async fn admin_create(
    settings: &crate::config::Settings,
    store: &Store,
    args: AdminCreate,
) -> anyhow::Result<()> {
    let username = Username::parse(args.username.clone())
        .with_context(|| format!("--username {:?}", args.username))?;
    let email = args
        .email
        .map(|e| Email::parse(e).context("--email"))
        .transpose()?;
    let display_name = args
        .display_name
        .map(|d| DisplayName::parse(d).context("--display-name"))
        .transpose()?;
    let subject = args
        .authentik_sub
        .map(|s| AuthentikSub::parse(s).context("--sub"))
        .transpose()?;
    let password = read_password(args.password_stdin)?;
    let engine = Engine::load(store)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let directory = Directory::new(store.clone(), engine);
    let kek = key_encryption_key(settings, store).await?;
    let auth = Auth::new(
        store.clone(),
        directory,
        SessionStore::Database(store.clone()),
        hash_pool(settings)?,
        kek,
        login_settings(settings, String::new()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let account = auth
        .create_account(NewAccount {
            username,
            password,
            subject,
            email,
            display_name,
            must_change_password: false,
            admin: true,
        })
        .await
        .map_err(|e| match e {
            AuthError::Policy(v) => anyhow::anyhow!("{v} ({})", v.code()),
            AuthError::Service(ServiceError::Conflict(_)) => {
                anyhow::anyhow!("an account named {} already exists", args.username)
            }
            other => anyhow::anyhow!("{other}"),
        })?;
    println!(
        "created operator {} (authentik_sub {}) with the admin role",
        account.username, account.subject
    );
    println!("running memberd serve processes follow the new role assignment within a second");
    Ok(())
}

async fn keys_command(
    settings: &crate::config::Settings,
    store: &Store,
    command: KeysCommand,
) -> anyhow::Result<()> {
    match command {
        KeysCommand::Rotate => {
            let kek = key_encryption_key(settings, store).await?;
            let kid = rotate_signing_key(store, &kek)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "signing with new key {kid}; older keys stay published until their tokens expire"
            );
            println!("running instances pick it up within 30 seconds");
        }
        KeysCommand::List => {
            println!("{:<18} {:<7} {:<25} RETIRED_AT", "KID", "ALG", "CREATED_AT");
            let when = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
            for key in store.signing_keys().await? {
                println!(
                    "{:<18} {:<7} {:<25} {}",
                    key.kid,
                    key.algorithm,
                    when(key.created_at),
                    key.retired_at.map(when).unwrap_or_else(|| "-".into())
                );
            }
        }
    }
    Ok(())
}
