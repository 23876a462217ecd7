//! The directory's vocabulary. Every string that comes from outside is parsed
//! into one of these types at the edge, so nothing inside re-validates it.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// Why a value was refused; the message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// `[a-z][a-z0-9_.:-]{0,63}`: the grammar shared by scope types, modules and actions.
fn is_identifier(s: &str) -> bool {
    let bytes = s.as_bytes();
    matches!(bytes.first(), Some(b'a'..=b'z'))
        && bytes.len() <= 64
        && bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b':' | b'-'))
}

/// 1..=max characters, none of them a control character.
fn is_printable(s: &str, max: usize) -> bool {
    !s.is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
}

/// Declares a string newtype that can only be built through its parser and
/// (de)serialises through it, so serde reports a bad value at its field.
macro_rules! string_type {
    ($(#[$meta:meta])* $name:ident, $what:literal, pattern: $pattern:literal, max: $max:expr, $valid:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, ParseError> {
                let value = value.into();
                let valid: fn(&str) -> bool = $valid;
                if valid(&value) {
                    Ok(Self(value))
                } else {
                    Err(ParseError(format!("invalid {}", $what)))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(value: String) -> Result<Self, ParseError> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// A string, with what it must look like as its description and,
        /// for clients and fuzzers, as a pattern the parser agrees with
        /// (a test in this module holds the two together).
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some($what))
                    .pattern(Some($pattern))
                    .max_length(Some($max))
                    .into()
            }
        }

        impl $name {
            /// The pattern the description gives.
            #[cfg(test)]
            pub(crate) const PATTERN: &'static str = $pattern;
            #[cfg(test)]
            pub(crate) const MAX_CHARS: usize = $max;
        }

        impl utoipa::ToSchema for $name {}
    };
}

string_type!(
    /// The identity provider's subject: the key other systems know a user by.
    AuthentikSub,
    "authentik_sub (1-255 printable characters)",
    pattern: r"^[^\s\u0000-\u001f\u007f-\u009f]([^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f])?$",
    max: 255,
    |s| is_printable(s, 255) && s.trim() == s
);
impl AuthentikSub {
    /// Subjects of the `local:` namespace belong to memberd's own accounts:
    /// no identity provider, SCIM client or upsert may create or claim one.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(LOCAL_SUBJECT_PREFIX)
    }
}

pub const LOCAL_SUBJECT_PREFIX: &str = "local:";

/// A local account's login name. Unique without regard to case: it is
/// lower-cased when parsed, so `Alice` and `alice` are one account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$", max_length = 64)]
pub struct Username(String);

impl Username {
    /// 1-64 of letters, digits and `.`, `_`, `-`, `@`, starting with a letter or digit.
    pub fn parse(value: impl Into<String>) -> Result<Self, ParseError> {
        // ASCII only: a letter such as the Kelvin sign lower-cases into ASCII
        // and would name someone else's account.
        let value = value.into().to_ascii_lowercase();
        let bytes = value.as_bytes();
        let valid = matches!(bytes.first(), Some(b'a'..=b'z' | b'0'..=b'9'))
            && bytes.len() <= 64
            && bytes
                .iter()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'@'));
        if valid {
            Ok(Self(value))
        } else {
            Err(ParseError(
                "invalid username (1-64 letters, digits, '.', '_', '-' or '@', starting with a letter or digit)".into(),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The subject a local account's user gets when it has none from the
    /// identity provider: the `local:` prefix keeps it apart from theirs.
    pub fn local_subject(&self) -> AuthentikSub {
        // `AuthentikSub::is_reserved` must hold for every subject made here.
        AuthentikSub::parse(format!("{LOCAL_SUBJECT_PREFIX}{}", self.0))
            .expect("a username makes a valid subject")
    }
}

impl TryFrom<String> for Username {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, ParseError> {
        Self::parse(value)
    }
}

impl From<Username> for String {
    fn from(value: Username) -> String {
        value.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_type!(
    /// What kind of thing a scope is (`org`, `project`, `site`...).
    ScopeType,
    "scope_type (expected [a-z][a-z0-9_.:-]{0,63})",
    pattern: r"^[a-z][a-z0-9_.:-]{0,63}$",
    max: 64,
    is_identifier
);
string_type!(
    /// Which instance of the scope type; `*` means every one.
    ScopeId,
    "scope_id (1-128 printable characters, or *)",
    pattern: r"^[^\u0000-\u001f\u007f-\u009f]+$",
    max: 128,
    |s| is_printable(s, 128)
);
string_type!(
    /// The area of the product a permission is about: a name, or a request
    /// path that may be a pattern (`/api/users/:id`, `/api/*`; see
    /// `authz::pattern` for the syntax: everything else is literal).
    Module,
    "module (expected [a-z][a-z0-9_.:-]{0,63}, or a path starting with / of at most 256 characters)",
    pattern: r"^([a-z][a-z0-9_.:-]{0,63}|/[^\s\u0000-\u001f\u007f-\u009f]*)$",
    max: 256,
    |s| is_identifier(s) || is_path(s)
);

/// A request path as a module: `/`, then printable characters without spaces.
fn is_path(s: &str) -> bool {
    s.starts_with('/')
        && s.chars().count() <= 256
        && !s.chars().any(|c| c.is_control() || c.is_whitespace())
}

impl Module {
    /// A path module with `*` or `:name` matches other paths.
    pub fn is_pattern(&self) -> bool {
        crate::authz::pattern::is_pattern(&self.0)
    }
}
string_type!(
    /// What may be done in the module; `*` means everything. Capitals are
    /// allowed so that HTTP methods (`GET`) from Casbin policies fit.
    Action,
    "action (expected [A-Za-z][A-Za-z0-9_.:-]{0,63} or *)",
    pattern: r"^(\*|[A-Za-z][A-Za-z0-9_.:-]{0,63})$",
    max: 64,
    |s| s == "*" || is_identifier(&s.to_ascii_lowercase())
);
string_type!(
    Email,
    "email (an address with one @, at most 254 characters)",
    pattern: r"^[^\s\u0000-\u001f\u007f-\u009f@]+@[^\s\u0000-\u001f\u007f-\u009f@]+$",
    max: 254,
    |s| {
        s.chars().count() <= 254
            && !s.chars().any(|c| c.is_control() || c.is_whitespace())
            && matches!(s.split_once('@'), Some((local, domain))
                if !local.is_empty() && !domain.is_empty() && !domain.contains('@'))
    }
);
string_type!(
    DisplayName,
    "display_name (1-200 printable characters)",
    pattern: r"^[^\u0000-\u001f\u007f-\u009f]+$",
    max: 200,
    |s| is_printable(s, 200)
);
string_type!(
    /// A human name for an API client, shown in listings.
    ClientName,
    "name (1-100 printable characters)",
    pattern: r"^[^\s\u0000-\u001f\u007f-\u009f]([^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f])?$",
    max: 100,
    |s| is_printable(s, 100) && s.trim() == s
);

string_type!(
    /// Free text an operator writes about a role or a module: at most 1,000
    /// characters, lines and tabs allowed, no other control characters.
    Description,
    "description (at most 1000 characters, no control characters but newlines and tabs)",
    pattern: r"^[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]*$",
    max: 1000,
    |s| s.chars().count() <= 1000 && !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
);

impl Description {
    pub fn empty() -> Self {
        Self(String::new())
    }
}

string_type!(
    /// A role's unique name.
    RoleName,
    "role name (1-64 characters: letters, digits, _ . : @ -, starting with a letter or digit)",
    pattern: r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$",
    max: 64,
    |s| {
        s.len() <= 64
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-'))
    }
);

/// What a matching permission does. Deny wins over any allow.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    #[default]
    Allow,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow" => Some(Self::Allow),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }
}

/// Where a role is held or a role permission is pinned. `*` as scope_id means
/// every id of the type; `*` as scope_type (with `*` as scope_id) means everywhere.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "ScopeFields")]
pub struct Scope {
    /// A scope type, or `*` (with scope_id `*`): everywhere.
    #[schema(pattern = r"^(\*|[a-z][a-z0-9_.:-]{0,63})$", max_length = 64)]
    pub scope_type: String,
    pub scope_id: ScopeId,
}

#[derive(Deserialize)]
struct ScopeFields {
    scope_type: String,
    scope_id: ScopeId,
}

impl TryFrom<ScopeFields> for Scope {
    type Error = ParseError;
    fn try_from(f: ScopeFields) -> Result<Self, ParseError> {
        Scope::parse(f.scope_type, f.scope_id)
    }
}

impl Scope {
    pub fn parse(scope_type: impl Into<String>, scope_id: ScopeId) -> Result<Self, ParseError> {
        let scope_type = scope_type.into();
        if scope_type == "*" {
            if scope_id.as_str() != "*" {
                return Err(ParseError(
                    "scope_type * (everywhere) needs scope_id *".into(),
                ));
            }
        } else {
            ScopeType::parse(scope_type.as_str())?;
        }
        Ok(Self {
            scope_type,
            scope_id,
        })
    }

    pub fn everywhere() -> Self {
        Self {
            scope_type: "*".into(),
            scope_id: ScopeId("*".into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

impl UserId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A global counter bumped by every change to users or grants, in the same
/// transaction as the change, so a cache can tell whether it is stale.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct Revision(pub i64);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: UserId,
    pub authentik_sub: AuthentikSub,
    pub email: Option<Email>,
    pub display_name: Option<DisplayName>,
    pub is_active: bool,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
    /// The revision of the last change to this user or their grants.
    #[serde(skip)]
    pub revision: Revision,
}

/// The fields of an upsert; `None` keeps what is stored.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserUpsert {
    pub authentik_sub: AuthentikSub,
    #[serde(default)]
    pub email: Option<Email>,
    #[serde(default)]
    pub display_name: Option<DisplayName>,
    #[serde(default)]
    pub is_active: Option<bool>,
}

impl UserUpsert {
    /// Whether applying this upsert to `user` would change nothing.
    pub fn is_noop_for(&self, user: &User) -> bool {
        self.email
            .as_ref()
            .is_none_or(|e| user.email.as_ref() == Some(e))
            && self
                .display_name
                .as_ref()
                .is_none_or(|d| user.display_name.as_ref() == Some(d))
            && self.is_active.is_none_or(|a| user.is_active == a)
    }
}

/// One scoped permission: `(scope_type, scope_id, module, action)`.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct Permission {
    pub scope_type: ScopeType,
    pub scope_id: ScopeId,
    pub module: Module,
    pub action: Action,
}

/// A permission as the index holds it, where a role held everywhere
/// gives `*` as its scope type.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct EffectivePermission {
    #[schema(value_type = String, pattern = r"^(\*|[a-z][a-z0-9_.:-]{0,63})$", max_length = 64)]
    scope_type: String,
    scope_id: ScopeId,
    module: Module,
    action: Action,
}

/// A permission granted directly to one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Grant {
    pub id: Uuid,
    pub user_id: UserId,
    #[serde(flatten)]
    pub permission: Permission,
    pub effect: Effect,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

/// A permission a role holds; pinned to one scope, or applying wherever the role is held.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
pub struct RolePermission {
    pub module: Module,
    pub action: Action,
    pub effect: Effect,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Role {
    pub name: RoleName,
    pub description: String,
    pub parents: Vec<RoleName>,
    pub permissions: Vec<RolePermission>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

/// A role held by a user in a scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct RoleAssignment {
    pub role: RoleName,
    #[serde(flatten)]
    pub scope: Scope,
}

/// Everything the engine compiles, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    pub revision: Revision,
    pub users: Vec<User>,
    pub grants: Vec<Grant>,
    pub roles: Vec<Role>,
    pub assignments: Vec<(UserId, RoleAssignment)>,
}

/// What other systems cache: a user's permissions at a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub user: User,
    /// Sorted, without duplicates.
    pub permissions: Vec<Permission>,
}

string_type!(
    /// An allowed request `Origin`: `scheme://host[:port]`, compared exactly.
    Origin,
    "origin (expected scheme://host[:port], e.g. https://admin.example.org)",
    pattern: r"^[a-z+.-]+://[a-z0-9.:\[\]-]+$",
    max: 255,
    |s| {
        s.len() <= 255
            && s.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty()
                    && scheme.bytes().all(|b| b.is_ascii_lowercase() || b == b'+' || b == b'-' || b == b'.')
                    && !rest.is_empty()
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
                    && rest.bytes().all(|b| !b.is_ascii_uppercase())
            })
    }
);

impl Origin {
    /// Origins are case-insensitive and sometimes written with a trailing slash.
    pub fn normalize(raw: &str) -> Result<Self, ParseError> {
        Self::parse(raw.trim_end_matches('/').to_ascii_lowercase())
    }
}

string_type!(
    /// A request path pattern: `*` matches within one segment, `**` across segments.
    PathPattern,
    "path pattern (starts with /, at most 256 characters, no spaces)",
    pattern: r"^/[^\s\u0000-\u001f\u007f-\u009f]*$",
    max: 256,
    is_path
);

impl PathPattern {
    pub fn matches(&self, path: &str) -> bool {
        glob_match(self.0.as_bytes(), path.as_bytes())
    }
}

/// Dynamic programming over pattern and path: linear in their product, with no
/// backtracking blow-up on patterns with many stars.
fn glob_match(pattern: &[u8], path: &[u8]) -> bool {
    // matched[j]: the pattern read so far matches path[..j].
    let mut matched = vec![false; path.len() + 1];
    matched[0] = true;
    let mut i = 0;
    while i < pattern.len() {
        let double = pattern[i] == b'*' && pattern.get(i + 1) == Some(&b'*');
        if pattern[i] == b'*' {
            // A star extends any match to the right, over any byte (`**`) or any but '/' (`*`).
            for j in 1..=path.len() {
                if !matched[j] && matched[j - 1] && (double || path[j - 1] != b'/') {
                    matched[j] = true;
                }
            }
            i += if double { 2 } else { 1 };
        } else {
            for j in (1..=path.len()).rev() {
                matched[j] = matched[j - 1] && path[j - 1] == pattern[i];
            }
            matched[0] = false;
            i += 1;
        }
    }
    matched[path.len()]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientStatus {
    Active,
    Disabled,
}

impl ClientStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "disabled" => Some(Self::Disabled),
            _ => None,
        }
    }
}

/// Who holds a role assignment. An assignment lasts while any source holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignmentSource {
    /// An administrator: the API, the console, the CLI.
    Admin,
    /// Membership of a SCIM group linked to the role.
    Scim,
}

/// What an API client may do, chosen when it is created. Each route names
/// the one it needs; `admin` stands for all of them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
pub enum Capability {
    /// Ask for decisions: `/v1/check`, explain, AuthZEN.
    #[serde(rename = "check")]
    #[value(name = "check")]
    Check,
    /// Read users, roles, rules and the catalog.
    #[serde(rename = "read")]
    #[value(name = "read")]
    Read,
    /// Disable and enable users, link identities (never local accounts).
    #[serde(rename = "users:write")]
    #[value(name = "users:write")]
    UsersWrite,
    /// Grant and revoke permissions, assign and unassign roles.
    #[serde(rename = "grants:write")]
    #[value(name = "grants:write")]
    GrantsWrite,
    /// Create and change roles, their permissions, rules and the catalog.
    #[serde(rename = "roles:write")]
    #[value(name = "roles:write")]
    RolesWrite,
    /// Provision users and groups over SCIM.
    #[serde(rename = "scim")]
    #[value(name = "scim")]
    Scim,
    /// Everything, memberd's own authority included: clients, accounts,
    /// sessions, the audit log, and giving `memberd` permissions.
    #[serde(rename = "admin")]
    #[value(name = "admin")]
    Admin,
}

impl Capability {
    pub const ALL: [Capability; 7] = [
        Self::Check,
        Self::Read,
        Self::UsersWrite,
        Self::GrantsWrite,
        Self::RolesWrite,
        Self::Scim,
        Self::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Check => "check",
            Self::Read => "read",
            Self::UsersWrite => "users:write",
            Self::GrantsWrite => "grants:write",
            Self::RolesWrite => "roles:write",
            Self::Scim => "scim",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// What a client gets when its creator names nothing: asking for
    /// decisions, which changes nothing and reveals no directory.
    pub const DEFAULT: &'static [Capability] = &[Self::Check];
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A system allowed to call the admin routes. Only the hash of its key is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiClient {
    pub client_key: String,
    pub name: ClientName,
    #[serde(skip)]
    pub api_key_hash: String,
    pub status: ClientStatus,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<OffsetDateTime>,
    pub allowed_origins: Vec<Origin>,
    /// Addresses or networks (CIDR).
    #[schema(value_type = Vec<String>)]
    pub allowed_ips: Vec<ipnet::IpNet>,
    pub allowed_paths: Vec<PathPattern>,
    pub rate_limit_per_minute: Option<u32>,
    pub capabilities: Vec<Capability>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<OffsetDateTime>,
}

impl ApiClient {
    /// Whether the client was given `needed` (or `admin`, which is all).
    pub fn may(&self, needed: Capability) -> bool {
        self.capabilities
            .iter()
            .any(|&c| c == needed || c == Capability::Admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strings near and far from every grammar: ASCII, spaces, controls,
    /// letters beyond ASCII, lengths past every limit.
    fn candidates() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let chars = prop_oneof![
            8 => proptest::char::range('a', 'z'),
            2 => proptest::char::range('A', 'Z'),
            2 => proptest::char::range('0', '9'),
            3 => proptest::sample::select(vec!['*', '/', ':', '.', '_', '-', '@', '[', ']', '+', ' ', '\t', '\n', '\u{0}', '\u{7f}', '\u{85}', '\u{a0}', '\u{212a}', 'é', '\u{2003}']),
        ];
        let limits = vec![
            0, 1, 2, 61, 62, 63, 64, 65, 98, 99, 100, 101, 126, 127, 128, 129,
        ];
        let limits = [
            limits,
            vec![
                198, 199, 200, 201, 252, 253, 254, 255, 256, 257, 999, 1000, 1001,
            ],
        ];
        prop_oneof![
            proptest::collection::vec(chars.clone(), 0..12).prop_map(|c| c.into_iter().collect()),
            proptest::collection::vec(chars.clone(), 60..300).prop_map(|c| c.into_iter().collect()),
            // At and around every length limit.
            (
                proptest::sample::select(vec!["", "/", "a", "A", "x@"]),
                proptest::sample::select(limits.concat()),
                chars,
            )
                .prop_map(|(head, n, last)| format!("{head}{}{last}", "a".repeat(n))),
        ]
    }

    macro_rules! agrees {
        ($test:ident, $name:ident) => {
            proptest::proptest! {
                /// The description's pattern and length say what the parser takes.
                #[test]
                fn $test(s in candidates()) {
                    let pattern = regex::Regex::new($name::PATTERN).unwrap();
                    let described = pattern.is_match(&s) && s.chars().count() <= $name::MAX_CHARS;
                    proptest::prop_assert_eq!($name::parse(s.clone()).is_ok(), described, "{:?}", s);
                }
            }
        };
    }
    agrees!(authentik_sub_pattern, AuthentikSub);
    agrees!(scope_type_pattern, ScopeType);
    agrees!(scope_id_pattern, ScopeId);
    agrees!(module_pattern, Module);
    agrees!(action_pattern, Action);
    agrees!(email_pattern, Email);
    agrees!(display_name_pattern, DisplayName);
    agrees!(client_name_pattern, ClientName);
    agrees!(description_pattern, Description);
    agrees!(role_name_pattern, RoleName);
    agrees!(origin_pattern, Origin);
    agrees!(path_pattern_pattern, PathPattern);
    agrees!(rule_name_pattern, RuleName);
    agrees!(rule_text_pattern, RuleText);

    #[test]
    fn usernames_are_ascii() {
        assert!(Username::parse("\u{212a}elvin").is_err());
        assert_eq!(Username::parse("Kelvin").unwrap().as_str(), "kelvin");
    }

    #[test]
    fn identifiers_follow_the_grammar() {
        for ok in ["a", "org", "system:user.list", "x-1_2", &"a".repeat(64)] {
            assert!(Module::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "1a",
            "_a",
            "a b",
            "a/b",
            "é",
            "*",
            &"a".repeat(65),
            "/a b",
        ] {
            assert!(Module::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Module::parse("/api/users/:id").unwrap().is_pattern());
        assert!(Module::parse("/api/*").unwrap().is_pattern());
        assert!(!Module::parse("/api/users").unwrap().is_pattern());
    }

    #[test]
    fn wildcards_are_allowed_where_they_mean_all() {
        assert!(Action::parse("*").is_ok());
        assert!(ScopeId::parse("*").is_ok());
        assert!(ScopeType::parse("*").is_err());
        assert!(Module::parse("*").is_err());
    }

    #[test]
    fn scope_ids_are_printable_and_bounded() {
        assert!(ScopeId::parse("Team 42/α").is_ok());
        assert!(ScopeId::parse("x".repeat(128)).is_ok());
        assert!(ScopeId::parse("x".repeat(129)).is_err());
        assert!(ScopeId::parse("").is_err());
        assert!(ScopeId::parse("a\nb").is_err());
    }

    #[test]
    fn subjects_and_emails() {
        assert!(AuthentikSub::parse("a1b2c3").is_ok());
        assert!(AuthentikSub::parse(" padded").is_err());
        assert!(AuthentikSub::parse("s".repeat(256)).is_err());
        assert!(Email::parse("ada@example.org").is_ok());
        assert!(Email::parse("ada@@example.org").is_err());
        assert!(Email::parse("no-at-sign").is_err());
        assert!(Email::parse("@example.org").is_err());
    }

    #[test]
    fn bad_values_are_reported_by_serde_at_their_field() {
        let err = serde_json::from_str::<Permission>(
            r#"{"scope_type":"Org","scope_id":"1","module":"m","action":"read"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("invalid scope_type"), "{err}");
    }
    #[test]
    fn scopes_and_roles() {
        let any = ScopeId::parse("*").unwrap();
        assert!(Scope::parse("*", any.clone()).is_ok());
        assert!(Scope::parse("*", ScopeId::parse("1").unwrap()).is_err());
        assert!(Scope::parse("Org", any).is_err());
        assert!(RoleName::parse("data2_admin").is_ok());
        assert!(RoleName::parse("-x").is_err());
        assert!(RoleName::parse("a b").is_err());
    }

    #[test]
    fn path_patterns() {
        let p = |s: &str| PathPattern::parse(s).unwrap();
        assert!(p("/admin/permissions/grant").matches("/admin/permissions/grant"));
        assert!(!p("/admin/permissions/grant").matches("/admin/permissions/grants"));
        assert!(p("/admin/permissions/*").matches("/admin/permissions/revoke"));
        assert!(!p("/admin/permissions/*").matches("/admin/permissions/a/b"));
        assert!(!p("/admin/*").matches("/admin/permissions/grant"));
        assert!(p("/admin/**").matches("/admin/permissions/grant"));
        assert!(p("/**").matches("/"));
        assert!(p("/a*c").matches("/abbbc"));
        assert!(p("/*/*/*").matches("/a/b/c"));
        assert!(!p("/*/*/*").matches("/a/b"));
        assert!(PathPattern::parse("admin").is_err());
        // Many stars against a long non-matching path stay cheap.
        let many = p(&format!("/{}x", "*".repeat(100)));
        assert!(!many.matches(&format!("/{}", "a".repeat(5000))));
    }

    #[test]
    fn origins_are_normalised() {
        assert_eq!(
            Origin::normalize("HTTPS://Admin.Example.org/")
                .unwrap()
                .as_str(),
            "https://admin.example.org"
        );
        assert!(Origin::normalize("http://localhost:5173").is_ok());
        assert!(Origin::normalize("admin.example.org").is_err());
        assert!(Origin::normalize("https://a.org/path").is_err());
    }
}

/// A local account (username and password) and the user it signs in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAccount {
    pub user_id: UserId,
    pub username: Username,
    pub subject: AuthentikSub,
    pub password_hash: String,
    pub must_change_password: bool,
    pub sealed_totp_secret: Option<String>,
    pub sealed_pending_totp_secret: Option<String>,
    pub is_active: bool,
    pub created_at: OffsetDateTime,
}

impl LocalAccount {
    pub fn totp_enabled(&self) -> bool {
        self.sealed_totp_secret.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct SessionId(pub Uuid);

impl SessionId {
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A signed-in session: what refresh tokens renew and access tokens name (`sid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_used_at: OffsetDateTime,
    /// Renewal moves this forward, never past `absolute_expires_at`.
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub absolute_expires_at: OffsetDateTime,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub revoked_at: Option<OffsetDateTime>,
}

impl Session {
    pub fn is_active(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

string_type!(
    /// A rule's unique name, such as `system:user:list`.
    RuleName,
    "rule name (1-128 characters: letters, digits, _ . : / -, starting with a letter or digit)",
    pattern: r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$",
    max: 128,
    |s| {
        s.len() <= 128
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'/' | b'-'))
    }
);
string_type!(
    /// What a menu shows: a title, a route path, a component, an icon.
    RuleText,
    "text (1-256 printable characters)",
    pattern: r"^[^\u0000-\u001f\u007f-\u009f]+$",
    max: 256,
    |s| is_printable(s, 256)
);

/// Where a rule sits in a back office's navigation.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    /// Groups menus; has no page of its own.
    Directory,
    /// A page.
    Menu,
    /// An action on a page.
    Button,
}

impl RuleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Directory => "directory",
            Self::Menu => "menu",
            Self::Button => "button",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "directory" => Ok(Self::Directory),
            "menu" => Ok(Self::Menu),
            "button" => Ok(Self::Button),
            _ => Err(ParseError("kind (directory, menu or button)".into())),
        }
    }
}

/// A node of the back office's rule tree, revealed by one permission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Rule {
    pub name: RuleName,
    pub kind: RuleKind,
    pub parent: Option<RuleName>,
    pub title: RuleText,
    pub path: Option<RuleText>,
    pub component: Option<RuleText>,
    pub icon: Option<RuleText>,
    pub weight: i32,
    pub hidden: bool,
    pub module: Module,
    pub action: Action,
}

/// A module the catalog declares, with its actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CatalogModule {
    pub module: Module,
    pub description: String,
    pub actions: Vec<Action>,
}

/// An address or a network: `10.0.0.1` is the network of that one address.
pub fn parse_ip_net(text: &str) -> Result<ipnet::IpNet, ParseError> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| ParseError(format!("{text:?} is not an IP address or CIDR")))
}
