//! The one authorization point. Every request is turned into the list of
//! [`Access`]es it needs and checked here before anything else happens.

use berth_oci::RepoName;

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

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
}

pub trait Authorizer: Send + Sync + 'static {
    /// Ok when `who` may do everything in `wants`; otherwise the error to send.
    fn authorize(&self, who: &Principal, wants: &[Access]) -> Result<()>;
}

/// Grants everything: a registry without accounts, as the reference registry
/// runs by default. Replaced by real accounts and roles.
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _who: &Principal, _wants: &[Access]) -> Result<()> {
        Ok(())
    }
}
