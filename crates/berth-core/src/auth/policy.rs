//! Who may do what: Harbor's five project roles, system administrators,
//! public projects and robot accounts, decided in one place.

use std::collections::BTreeSet;

use berth_db::{Db, ProjectRow};
use serde::{Deserialize, Serialize};

use crate::Result;

/// Harbor's project roles, with Harbor's role ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    ProjectAdmin,
    Maintainer,
    Developer,
    Guest,
    LimitedGuest,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::ProjectAdmin,
        Role::Maintainer,
        Role::Developer,
        Role::Guest,
        Role::LimitedGuest,
    ];

    pub fn id(self) -> i64 {
        match self {
            Role::ProjectAdmin => 1,
            Role::Developer => 2,
            Role::Guest => 3,
            Role::Maintainer => 4,
            Role::LimitedGuest => 5,
        }
    }

    pub fn from_id(id: i64) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.id() == id)
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::ProjectAdmin => "projectAdmin",
            Role::Maintainer => "maintainer",
            Role::Developer => "developer",
            Role::Guest => "guest",
            Role::LimitedGuest => "limitedGuest",
        }
    }

    /// What the role may do in its project.
    pub fn perms(self) -> &'static [Perm] {
        use Perm::*;
        match self {
            Role::ProjectAdmin => &Perm::ALL,
            Role::Maintainer => &[
                Pull,
                Push,
                Delete,
                ReadProject,
                ListRepositories,
                ListMembers,
                ListRobots,
                ListLogs,
                CreateTag,
                DeleteTag,
            ],
            Role::Developer => &[
                Pull,
                Push,
                ReadProject,
                ListRepositories,
                ListMembers,
                ListLogs,
                CreateTag,
            ],
            Role::Guest => &[Pull, ReadProject, ListRepositories, ListMembers, ListLogs],
            Role::LimitedGuest => &[Pull, ReadProject],
        }
    }
}

/// A permission inside one project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Perm {
    /// Read images and artifacts.
    Pull,
    Push,
    /// Delete artifacts, tags or repositories.
    Delete,
    ReadProject,
    ListRepositories,
    UpdateProject,
    DeleteProject,
    ListMembers,
    ManageMembers,
    ListRobots,
    ManageRobots,
    ListLogs,
    CreateTag,
    DeleteTag,
}

impl Perm {
    pub const ALL: [Perm; 14] = [
        Perm::Pull,
        Perm::Push,
        Perm::Delete,
        Perm::ReadProject,
        Perm::ListRepositories,
        Perm::UpdateProject,
        Perm::DeleteProject,
        Perm::ListMembers,
        Perm::ManageMembers,
        Perm::ListRobots,
        Perm::ManageRobots,
        Perm::ListLogs,
        Perm::CreateTag,
        Perm::DeleteTag,
    ];
}

/// One entry of a robot's permissions, in Harbor's shape.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RobotPermission {
    /// "project" or "system".
    pub kind: String,
    /// A project name, or "*" for every project.
    pub namespace: String,
    pub access: Vec<RobotAccess>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RobotAccess {
    pub resource: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
}

impl RobotAccess {
    fn perms(&self) -> &'static [Perm] {
        use Perm::*;
        match (self.resource.as_str(), self.action.as_str()) {
            ("repository", "pull") => &[Pull, ReadProject, ListRepositories],
            ("repository", "push") => &[Push, ReadProject],
            ("repository", "delete") | ("artifact", "delete") => &[Delete, ReadProject],
            ("repository", "list") | ("repository", "read") | ("artifact", "list") | ("artifact", "read") => {
                &[ReadProject, ListRepositories]
            }
            ("tag", "create") => &[CreateTag],
            ("tag", "delete") => &[DeleteTag],
            ("tag", "list") => &[ReadProject],
            ("member", "list") | ("member", "read") => &[ListMembers],
            ("log", "list") => &[ListLogs],
            ("robot", "list") | ("robot", "read") => &[ListRobots],
            _ => &[],
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    Anonymous,
    User {
        id: i64,
        name: String,
        sysadmin: bool,
    },
    Robot {
        id: i64,
        name: String,
        project_id: Option<i64>,
        permissions: Vec<RobotPermission>,
    },
}

impl Subject {
    pub fn name(&self) -> &str {
        match self {
            Subject::Anonymous => "anonymous",
            Subject::User { name, .. } | Subject::Robot { name, .. } => name,
        }
    }

    pub fn is_sysadmin(&self) -> bool {
        matches!(self, Subject::User { sysadmin: true, .. })
    }

    pub fn user_id(&self) -> Option<i64> {
        match self {
            Subject::User { id, .. } => Some(*id),
            _ => None,
        }
    }
}

pub type Perms = BTreeSet<Perm>;

/// What `who` may do in `project` (None: the project does not exist).
pub async fn project_perms(db: &Db, who: &Subject, project: Option<&ProjectRow>) -> Result<Perms> {
    let mut out = Perms::new();
    let Some(p) = project else { return Ok(out) };
    if p.public {
        out.extend([Perm::Pull, Perm::ReadProject, Perm::ListRepositories]);
    }
    match who {
        Subject::Anonymous => {}
        Subject::User { sysadmin: true, .. } => out.extend(Perm::ALL),
        Subject::User { id, .. } => {
            if let Some(role) = db.member_role(p.id, *id).await?.and_then(Role::from_id) {
                out.extend(role.perms());
            }
        }
        Subject::Robot {
            project_id,
            permissions,
            ..
        } => {
            for perm in permissions {
                let applies = match perm.kind.as_str() {
                    "project" => perm.namespace == p.name || (perm.namespace == "*" && project_id.is_none()),
                    _ => false,
                } && project_id.is_none_or(|pid| pid == p.id);
                if applies {
                    for a in &perm.access {
                        if a.effect.as_deref() != Some("deny") {
                            out.extend(a.perms());
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_ids_are_harbors() {
        assert_eq!(Role::from_id(1), Some(Role::ProjectAdmin));
        assert_eq!(Role::from_id(2), Some(Role::Developer));
        assert_eq!(Role::from_id(3), Some(Role::Guest));
        assert_eq!(Role::from_id(4), Some(Role::Maintainer));
        assert_eq!(Role::from_id(5), Some(Role::LimitedGuest));
        assert_eq!(Role::from_id(6), None);
    }

    #[test]
    fn roles_are_nested() {
        // Each role may do at least what the one below it may.
        let order = [
            Role::LimitedGuest,
            Role::Guest,
            Role::Developer,
            Role::Maintainer,
            Role::ProjectAdmin,
        ];
        for w in order.windows(2) {
            let lower: Perms = w[0].perms().iter().copied().collect();
            let upper: Perms = w[1].perms().iter().copied().collect();
            assert!(lower.is_subset(&upper), "{:?} ⊄ {:?}", w[0], w[1]);
        }
        assert!(!Role::Developer.perms().contains(&Perm::Delete));
        assert!(Role::Maintainer.perms().contains(&Perm::Delete));
        assert!(!Role::Maintainer.perms().contains(&Perm::ManageMembers));
    }
}
