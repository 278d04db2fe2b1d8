//! Logging in, issuing tokens, and checking them on every registry request.

use std::sync::Arc;
use std::time::Duration;

use berth_db::{AuditRow, Db, UserRow};
use berth_oci::{ErrorCode, RepoName};
use serde::Serialize;

use super::policy::{project_perms, Perm, RobotPermission, Role, Subject};
use super::secret;
use super::token::{ClaimAccess, Claims, TokenSigner};
use super::{Access, Action, Authorizer, Credentials, Principal, Resource};
use crate::shared::{SessionData, Shared};
use crate::{Error, Result};

/// How long a verified password is remembered.
const PASSWORD_CACHE_TTL: Duration = Duration::from_secs(60);

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// The answer of `/service/token`, in the shape docker expects.
#[derive(Clone, Debug, Serialize)]
pub struct TokenReply {
    pub token: String,
    pub access_token: String,
    pub expires_in: i64,
    pub issued_at: String,
}

pub struct AuthSettings {
    /// The `service` of tokens: the registry's name in WWW-Authenticate.
    pub service: String,
    pub token_lifetime: Duration,
    pub leeway: Duration,
    pub max_failed_logins: u32,
    pub lockout: Duration,
    /// How long a browser session lasts.
    pub session_lifetime: Duration,
}

/// A browser session that just started: the cookie value and its CSRF token.
pub struct NewSession {
    pub cookie: String,
    pub csrf: String,
    pub max_age: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            service: "berth".into(),
            token_lifetime: Duration::from_secs(1800),
            leeway: Duration::from_secs(60),
            max_failed_logins: 5,
            lockout: Duration::from_secs(60),
            session_lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

pub struct AuthService {
    db: Db,
    signer: TokenSigner,
    settings: AuthSettings,
    shared: Arc<Shared>,
    /// Keys the cache of verified passwords, so that what it stores says
    /// nothing to someone who can read Redis but not the configuration.
    cache_key: Vec<u8>,
}

fn now_secs() -> i64 {
    berth_db::now_ms() / 1000
}

fn unauthorized(msg: &str) -> Error {
    Error::new(ErrorCode::Unauthorized, msg)
}

impl AuthService {
    pub fn new(db: Db, key: Vec<u8>, settings: AuthSettings) -> AuthService {
        let cache_key = hmac_sha256(&key, b"berth password cache");
        let signer = TokenSigner::new(key, "berth-token-issuer", settings.leeway.as_secs() as i64);
        AuthService {
            shared: Arc::new(Shared::local(db.clone())),
            db,
            signer,
            settings,
            cache_key,
        }
    }

    /// Keeps sessions, login counts, leases and caches in `shared`
    /// (Redis, when configured) instead of the database and this process.
    pub fn with_shared(mut self, shared: Arc<Shared>) -> AuthService {
        self.shared = shared;
        self
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn service(&self) -> &str {
        &self.settings.service
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn audit(&self, who: &str, operation: &str, resource_type: &str, resource: &str, success: bool) {
        let row = AuditRow {
            id: 0,
            op_time: berth_db::now_ms(),
            username: who.to_string(),
            operation: operation.to_string(),
            resource_type: resource_type.to_string(),
            resource: resource.to_string(),
            success,
            detail: String::new(),
        };
        if let Err(e) = self.db.add_audit(&row).await {
            tracing::warn!(error = %e, operation, resource, "writing the audit log failed");
        }
    }

    /// Checks a username (or `robot$...` name) and password or secret.
    /// Failures are logged in the audit log and, repeated, answered with 429.
    pub async fn login(&self, username: &str, password: &str) -> Result<Subject> {
        let (max, window) = (self.settings.max_failed_logins, self.settings.lockout);
        if let Some(left) = self.shared.login_blocked(username, max, window).await {
            return Err(Error::new(
                ErrorCode::TooManyRequests,
                format!(
                    "too many failed logins for {username}; try again in {} s",
                    left.as_secs() + 1
                ),
            ));
        }
        let subject = self.check_credentials(username, password).await?;
        match subject {
            Some(s) => {
                self.shared.login_succeeded(username).await;
                Ok(s)
            }
            None => {
                self.shared.login_failed(username, window).await;
                self.audit(username, "login", "user", username, false).await;
                Err(unauthorized("invalid username or password"))
            }
        }
    }

    async fn check_credentials(&self, username: &str, password: &str) -> Result<Option<Subject>> {
        if username.starts_with("robot$") {
            let Some(r) = self.db.robot_by_name(username).await? else {
                return Ok(None);
            };
            let expired = r.expires_at >= 0 && r.expires_at < berth_db::now_ms();
            if r.disabled || expired || !secret::verify_secret(password, &r.secret_hash) {
                return Ok(None);
            }
            let permissions: Vec<RobotPermission> = serde_json::from_str(&r.permissions).unwrap_or_default();
            return Ok(Some(Subject::Robot {
                id: r.id,
                name: r.name,
                project_id: r.project_id,
                permissions,
            }));
        }
        let Some(u) = self.db.user_by_name(username).await? else {
            // Spend the same time as a real check, so timing does not reveal names.
            let _ = secret::verify_password_bounded(password, DUMMY_HASH).await;
            return Ok(None);
        };
        // argon2 is slow on purpose; a client that sends its password with
        // every request (docker, skopeo, API scripts) pays it once a minute.
        // The key covers the stored hash, so a changed password misses.
        let mut msg = Vec::new();
        for part in [username.as_bytes(), u.password_hash.as_bytes(), password.as_bytes()] {
            msg.extend_from_slice(&(part.len() as u64).to_be_bytes());
            msg.extend_from_slice(part);
        }
        let cache_key = format!("pw:{}", hex::encode(hmac_sha256(&self.cache_key, &msg)));
        let ok = if self.shared.cache_get(&cache_key).await.is_some() {
            true
        } else {
            // Many logins with the same password at once: the first check
            // fills the cache while the others wait for a slot, and they
            // look again before paying for one.
            let _slot = secret::argon2_slots()
                .acquire()
                .await
                .expect("the semaphore is never closed");
            if self.shared.cache_get(&cache_key).await.is_some() {
                true
            } else {
                let hash = u.password_hash.clone();
                let pw = password.to_string();
                let ok = tokio::task::spawn_blocking(move || secret::verify_password(&pw, &hash))
                    .await
                    .unwrap_or(false);
                if ok {
                    self.shared.cache_put(&cache_key, b"1", PASSWORD_CACHE_TTL).await;
                }
                ok
            }
        };
        Ok(ok.then_some(Subject::User {
            id: u.id,
            name: u.username,
            sysadmin: u.sysadmin,
        }))
    }

    /// Issues a token for as much of `scopes` as `who` may hold.
    pub async fn issue(&self, who: &Subject, scopes: &[String]) -> Result<TokenReply> {
        let mut access = Vec::new();
        for scope in scopes.iter().flat_map(|s| s.split(' ')).filter(|s| !s.is_empty()) {
            let Some((kind, name, actions)) = parse_scope(scope) else {
                continue;
            };
            let granted = self.grant(who, kind, name, &actions).await?;
            if !granted.is_empty() {
                access.push(ClaimAccess {
                    kind: kind.to_string(),
                    name: name.to_string(),
                    actions: granted,
                });
            }
        }
        let now = now_secs();
        let lifetime = self.settings.token_lifetime.as_secs() as i64;
        let claims = Claims {
            iss: self.signer.issuer.clone(),
            sub: who.name().to_string(),
            aud: self.settings.service.clone(),
            exp: now + lifetime,
            nbf: now,
            iat: now,
            jti: secret::random_secret(12),
            access,
        };
        let token = self.signer.sign(&claims);
        Ok(TokenReply {
            access_token: token.clone(),
            token,
            expires_in: lifetime,
            issued_at: rfc3339(now),
        })
    }

    /// The subset of `actions` on a resource that `who` may have.
    async fn grant(&self, who: &Subject, kind: &str, name: &str, actions: &[&str]) -> Result<Vec<String>> {
        match kind {
            "registry" if name == "catalog" => Ok(if who.is_sysadmin() && actions.contains(&"*") {
                vec!["*".to_string()]
            } else {
                vec![]
            }),
            "repository" => {
                let Ok(repo) = name.parse::<RepoName>() else {
                    return Ok(vec![]);
                };
                let project = self.db.project_by_name(repo.project()).await?;
                let perms = project_perms(&self.db, who, project.as_ref()).await?;
                let mut out = Vec::new();
                for a in actions {
                    let ok = match *a {
                        "pull" => perms.contains(&Perm::Pull),
                        "push" => perms.contains(&Perm::Push),
                        "delete" => perms.contains(&Perm::Delete),
                        "*" => {
                            perms.contains(&Perm::Pull) && perms.contains(&Perm::Push) && perms.contains(&Perm::Delete)
                        }
                        _ => false,
                    };
                    if ok && !out.iter().any(|x| x == a) {
                        out.push((*a).to_string());
                    }
                }
                Ok(out)
            }
            _ => Ok(vec![]),
        }
    }

    /// Starts a browser session for a signed-in user (robots have none).
    pub async fn start_session(&self, who: &Subject) -> Result<NewSession> {
        let Some(user_id) = who.user_id() else {
            return Err(Error::new(
                ErrorCode::Denied,
                "robot accounts cannot sign in to the portal",
            ));
        };
        let cookie = secret::random_secret(32);
        let csrf = secret::random_secret(24);
        let data = SessionData {
            user_id,
            csrf: csrf.clone(),
        };
        self.shared
            .session_create(&secret::hash_secret(&cookie), &data, self.settings.session_lifetime)
            .await?;
        self.audit(who.name(), "login", "user", who.name(), true).await;
        Ok(NewSession {
            cookie,
            csrf,
            max_age: self.settings.session_lifetime,
        })
    }

    /// The user and CSRF token of a live session cookie.
    pub async fn session(&self, cookie: &str) -> Result<Option<(Subject, String)>> {
        let Some(s) = self.shared.session(&secret::hash_secret(cookie)).await? else {
            return Ok(None);
        };
        let Some(u) = self.db.user_by_id(s.user_id).await? else {
            return Ok(None);
        };
        Ok(Some((
            Subject::User {
                id: u.id,
                name: u.username,
                sysadmin: u.sysadmin,
            },
            s.csrf,
        )))
    }

    pub async fn end_session(&self, cookie: &str) -> Result<()> {
        self.shared.session_delete(&secret::hash_secret(cookie)).await?;
        Ok(())
    }

    /// Creates the `admin` account if there is none. Returns the password
    /// when berth generated it (to be shown once).
    pub async fn ensure_admin(&self, configured: Option<&str>) -> Result<Option<String>> {
        if self.db.user_by_name("admin").await?.is_some() {
            return Ok(None);
        }
        let (password, generated) = match configured {
            Some(p) => {
                secret::password_policy(p)
                    .map_err(|e| Error::new(ErrorCode::Denied, format!("admin password: {e}")))?;
                (p.to_string(), false)
            }
            None => (secret::random_password(), true),
        };
        let user = UserRow {
            id: 0,
            username: "admin".into(),
            email: String::new(),
            realname: "system admin".into(),
            comment: "created at first start".into(),
            password_hash: secret::hash_password(&password),
            sysadmin: true,
            created_at: 0,
            updated_at: 0,
        };
        match self.db.create_user(&user).await {
            Ok(_) => Ok(generated.then_some(password)),
            // Another replica created it first.
            Err(_) if self.db.user_by_name("admin").await?.is_some() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the public `library` project, owned by admin, if missing.
    pub async fn ensure_library(&self) -> Result<()> {
        if self.db.project_by_name("library").await?.is_some() {
            return Ok(());
        }
        let admin = self.db.user_by_name("admin").await?.map(|u| u.id).unwrap_or(1);
        self.db
            .create_project("library", true, admin, Role::ProjectAdmin.id())
            .await?;
        Ok(())
    }
}

/// Verifies bearer tokens on registry requests: no database access.
impl Authorizer for AuthService {
    fn authorize(&self, creds: &Credentials<'_>, wants: &[Access]) -> Result<Principal> {
        let Some(token) = creds.bearer else {
            return Err(unauthorized("authentication required"));
        };
        let claims = self
            .signer
            .verify(token, &self.settings.service, now_secs())
            .map_err(|e| unauthorized(&e.to_string()))?;
        for want in wants {
            let (kind, name, action) = match &want.resource {
                Resource::Catalog => ("registry", "catalog".to_string(), "*"),
                Resource::Repository(r) => (
                    "repository",
                    r.to_string(),
                    match want.action {
                        Action::Pull => "pull",
                        Action::Push => "push",
                        Action::Delete => "delete",
                    },
                ),
            };
            let held = claims
                .access
                .iter()
                .any(|a| a.kind == kind && a.name == name && a.actions.iter().any(|x| x == action || x == "*"));
            if !held {
                // 403, not 401: the token is valid but does not cover this. Clients
                // that asked for too little (oras) fetch a wider token on 403; the
                // token service never grants more than the account may hold.
                return Err(Error::new(
                    ErrorCode::Denied,
                    format!("the token does not grant {action} on {kind} {name}"),
                )
                .with_detail(serde_json::json!({"insufficient_scope": true})));
            }
        }
        Ok(Principal { name: claims.sub })
    }
}

/// `repository:library/busybox:pull,push` → ("repository", "library/busybox", ["pull", "push"]).
/// The type may carry a class, `repository(plugin)`, which is ignored.
pub fn parse_scope(scope: &str) -> Option<(&str, &str, Vec<&str>)> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let kind = kind.split('(').next().unwrap_or(kind);
    Some((kind, name, actions.split(',').filter(|a| !a.is_empty()).collect()))
}

/// A hash of a password nobody has, to spend equal time on unknown users.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$4Jb4vPRd/ZYA3H6+ISc1Cn7I+3Q8wEtZ4lQQKZ+Cnzw";

pub fn rfc3339(secs: i64) -> String {
    // Civil-from-days (Howard Hinnant), enough for token timestamps.
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(
            parse_scope("repository:a/b/c:pull,push"),
            Some(("repository", "a/b/c", vec!["pull", "push"]))
        );
        assert_eq!(
            parse_scope("repository(plugin):x:pull"),
            Some(("repository", "x", vec!["pull"]))
        );
        assert_eq!(
            parse_scope("registry:catalog:*"),
            Some(("registry", "catalog", vec!["*"]))
        );
        assert_eq!(parse_scope("nonsense"), None);
    }

    #[test]
    fn times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_300_000), "2026-12-03T12:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn dummy_hash_parses() {
        assert!(argon2::password_hash::PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
