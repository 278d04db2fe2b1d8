//! The one authorization point. Every request is turned into the list of
//! [`Access`]es it needs and checked here before anything else happens.

mod policy;
mod secret;
mod service;
mod token;

use berth_oci::RepoName;

pub use policy::{project_perms, Perm, Perms, RobotAccess, RobotPermission, Role, Subject};
pub use secret::{
    constant_time_eq, hash_password, hash_secret, password_policy, random_bytes, random_password, random_secret,
    verify_password, verify_password_bounded,
};
pub use service::{parse_scope, rfc3339, AuthService, AuthSettings, NewSession, TokenReply};
pub use token::{ClaimAccess, Claims, TokenError, TokenSigner};

use crate::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    Repository(RepoName),
    Catalog,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub resource: Resource,
    pub action: Action,
}

impl Access {
    pub fn repo(name: &RepoName, action: Action) -> Access {
        Access {
            resource: Resource::Repository(name.clone()),
            action,
        }
    }
}

/// Who a request was authorized for: the token's subject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
}

/// What a registry request brought to prove who it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct Credentials<'a> {
    pub bearer: Option<&'a str>,
}

pub trait Authorizer: Send + Sync + 'static {
    /// The principal when `creds` allow everything in `wants`; otherwise the
    /// error to send (UNAUTHORIZED makes the client fetch a token).
    fn authorize(&self, creds: &Credentials<'_>, wants: &[Access]) -> Result<Principal>;
}

/// Grants everything. For tests of the distribution API itself; the server
/// always runs with [`AuthService`].
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _creds: &Credentials<'_>, _wants: &[Access]) -> Result<Principal> {
        Ok(Principal {
            name: "anonymous".into(),
        })
    }
}
