//! Users, projects, members, robot accounts, the audit log and settings.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::Dialect;
use crate::{like_escape, now_ms, opt_string, Db, Result};

fn text(r: &AnyRow, col: &str) -> Result<String> {
    Ok(opt_string(r, col)?.unwrap_or_default())
}

#[derive(Clone, Debug, PartialEq)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub realname: String,
    pub comment: String,
    pub password_hash: String,
    pub sysadmin: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProjectRow {
    pub id: i64,
    pub name: String,
    pub public: bool,
    pub owner_id: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Bytes the project may hold; -1: no limit.
    pub storage_limit: i64,
    /// Artifacts (manifests) the project may hold; -1: no limit.
    pub count_limit: i64,
    /// The registry this project is a proxy cache of.
    pub registry_id: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MemberRow {
    pub project_id: i64,
    pub user_id: i64,
    pub username: String,
    pub role: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RobotRow {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub secret_hash: String,
    /// "system" or "project".
    pub level: String,
    pub project_id: Option<i64>,
    /// JSON array of Harbor-style permissions.
    pub permissions: String,
    /// Unix milliseconds, or -1 for never.
    pub expires_at: i64,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AuditRow {
    pub id: i64,
    pub op_time: i64,
    pub username: String,
    pub operation: String,
    pub resource_type: String,
    pub resource: String,
    pub success: bool,
    pub detail: String,
}

/// Filters for listing the audit log; all optional, combined with AND.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub username: Option<String>,
    pub operation: Option<String>,
    pub resource_type: Option<String>,
    /// Prefix of the resource, such as `library/` for one project.
    pub resource_prefix: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

const USER_COLS: &str = "id, username, email, realname, comment, password_hash, sysadmin, created_at, updated_at";
const PROJECT_COLS: &str =
    "id, name, public, owner_id, created_at, updated_at, storage_limit, count_limit, registry_id";
const ROBOT_COLS: &str =
    "id, name, description, secret_hash, level, project_id, permissions, expires_at, disabled, created_at, updated_at";

fn user(r: &AnyRow) -> Result<UserRow> {
    Ok(UserRow {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        email: text(r, "email")?,
        realname: text(r, "realname")?,
        comment: text(r, "comment")?,
        password_hash: text(r, "password_hash")?,
        sysadmin: r.try_get::<i64, _>("sysadmin")? != 0,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn project(r: &AnyRow) -> Result<ProjectRow> {
    Ok(ProjectRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        public: r.try_get::<i64, _>("public")? != 0,
        owner_id: r.try_get("owner_id")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        storage_limit: r.try_get("storage_limit")?,
        count_limit: r.try_get("count_limit")?,
        registry_id: r.try_get::<Option<i64>, _>("registry_id")?,
    })
}

fn robot(r: &AnyRow) -> Result<RobotRow> {
    Ok(RobotRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        description: text(r, "description")?,
        secret_hash: text(r, "secret_hash")?,
        level: text(r, "level")?,
        project_id: r.try_get::<Option<i64>, _>("project_id")?,
        permissions: text(r, "permissions")?,
        expires_at: r.try_get("expires_at")?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn audit(r: &AnyRow) -> Result<AuditRow> {
    Ok(AuditRow {
        id: r.try_get("id")?,
        op_time: r.try_get("op_time")?,
        username: r.try_get("username")?,
        operation: r.try_get("operation")?,
        resource_type: r.try_get("resource_type")?,
        resource: r.try_get("resource")?,
        success: r.try_get::<i64, _>("success")? != 0,
        detail: text(r, "detail")?,
    })
}

/// True when the error is a unique-key violation (a name already taken).
fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_unique_violation())
}

impl Db {
    // ---- users ----

    pub async fn create_user(&self, u: &UserRow) -> Result<i64> {
        let now = now_ms();
        sqlx::query(&self.q(
            "INSERT INTO users (username, email, realname, comment, password_hash, sysadmin, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&u.username)
        .bind(&u.email)
        .bind(&u.realname)
        .bind(&u.comment)
        .bind(&u.password_hash)
        .bind(i64::from(u.sysadmin))
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(self
            .user_by_name(&u.username)
            .await?
            .expect("user exists after insert")
            .id)
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE username = ?");
        let row = sqlx::query(&self.q(&sql)).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(user).transpose()
    }

    pub async fn user_by_id(&self, id: i64) -> Result<Option<UserRow>> {
        let sql = format!("SELECT {USER_COLS} FROM users WHERE id = ?");
        let row = sqlx::query(&self.q(&sql)).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(user).transpose()
    }

    /// Users whose name contains `name` (all if None), by id, one page, and the total.
    pub async fn list_users(&self, name: Option<&str>, offset: i64, limit: i64) -> Result<(Vec<UserRow>, i64)> {
        let pattern = format!("%{}%", like_escape(name.unwrap_or("")));
        let total: i64 = sqlx::query(&self.q("SELECT COUNT(*) FROM users WHERE username LIKE ? ESCAPE '!'"))
            .bind(&pattern)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let sql =
            format!("SELECT {USER_COLS} FROM users WHERE username LIKE ? ESCAPE '!' ORDER BY id LIMIT ? OFFSET ?");
        let rows = sqlx::query(&self.q(&sql))
            .bind(&pattern)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        Ok((rows.iter().map(user).collect::<Result<_>>()?, total))
    }

    pub async fn update_user_profile(&self, id: i64, email: &str, realname: &str, comment: &str) -> Result<bool> {
        let r =
            sqlx::query(&self.q("UPDATE users SET email = ?, realname = ?, comment = ?, updated_at = ? WHERE id = ?"))
                .bind(email)
                .bind(realname)
                .bind(comment)
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn set_password_hash(&self, id: i64, hash: &str) -> Result<bool> {
        let r = sqlx::query(&self.q("UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?"))
            .bind(hash)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn set_sysadmin(&self, id: i64, sysadmin: bool) -> Result<bool> {
        let r = sqlx::query(&self.q("UPDATE users SET sysadmin = ?, updated_at = ? WHERE id = ?"))
            .bind(i64::from(sysadmin))
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn delete_user(&self, id: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        sqlx::query(&self.q("DELETE FROM project_members WHERE user_id = ?"))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query(&self.q("DELETE FROM users WHERE id = ?"))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- projects ----

    /// Creates a project with its owner as project admin. None if the name is taken.
    pub async fn create_project(
        &self,
        name: &str,
        public: bool,
        owner_id: i64,
        owner_role: i64,
    ) -> Result<Option<i64>> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            &self.q("INSERT INTO projects (name, public, owner_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"),
        )
        .bind(name)
        .bind(i64::from(public))
        .bind(owner_id)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Ok(None),
            other => other?,
        };
        let id: i64 = sqlx::query(&self.q("SELECT id FROM projects WHERE name = ?"))
            .bind(name)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        sqlx::query(&self.q("INSERT INTO project_members (project_id, user_id, role, created_at) VALUES (?, ?, ?, ?)"))
            .bind(id)
            .bind(owner_id)
            .bind(owner_role)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    pub async fn project_by_name(&self, name: &str) -> Result<Option<ProjectRow>> {
        let sql = format!("SELECT {PROJECT_COLS} FROM projects WHERE name = ?");
        let row = sqlx::query(&self.q(&sql)).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(project).transpose()
    }

    pub async fn project_by_id(&self, id: i64) -> Result<Option<ProjectRow>> {
        let sql = format!("SELECT {PROJECT_COLS} FROM projects WHERE id = ?");
        let row = sqlx::query(&self.q(&sql)).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(project).transpose()
    }

    /// Projects whose name contains `name`, that are public or have `member` as a
    /// member (all when `member` is None), by name, one page, and the total.
    pub async fn list_projects(
        &self,
        name: Option<&str>,
        public: Option<bool>,
        member: Option<i64>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<ProjectRow>, i64)> {
        let mut filter = String::from("p.name LIKE ? ESCAPE '!'");
        if public.is_some() {
            filter.push_str(" AND p.public = ?");
        }
        if member.is_some() {
            filter.push_str(
                " AND (p.public = 1 OR EXISTS (SELECT 1 FROM project_members m WHERE m.project_id = p.id AND m.user_id = ?))",
            );
        }
        let pattern = format!("%{}%", like_escape(name.unwrap_or("")));
        let count_sql = format!("SELECT COUNT(*) FROM projects p WHERE {filter}");
        let list_sql = format!(
            "SELECT {} FROM projects p WHERE {filter} ORDER BY p.name LIMIT ? OFFSET ?",
            PROJECT_COLS
                .split(", ")
                .map(|c| format!("p.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let count_sql = self.q(&count_sql);
        let list_sql = self.q(&list_sql);
        let mut count = sqlx::query(&count_sql).bind(&pattern);
        let mut list = sqlx::query(&list_sql).bind(&pattern);
        if let Some(p) = public {
            count = count.bind(i64::from(p));
            list = list.bind(i64::from(p));
        }
        if let Some(m) = member {
            count = count.bind(m);
            list = list.bind(m);
        }
        let total: i64 = count.fetch_one(&self.pool).await?.try_get(0)?;
        let rows = list.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        Ok((rows.iter().map(project).collect::<Result<_>>()?, total))
    }

    pub async fn set_project_public(&self, id: i64, public: bool) -> Result<bool> {
        let r = sqlx::query(&self.q("UPDATE projects SET public = ?, updated_at = ? WHERE id = ?"))
            .bind(i64::from(public))
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Makes the project a proxy cache of a registry (None: an ordinary project).
    pub async fn set_project_registry(&self, id: i64, registry_id: Option<i64>) -> Result<bool> {
        let r = sqlx::query(&self.q("UPDATE projects SET registry_id = ?, updated_at = ? WHERE id = ?"))
            .bind(registry_id)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.changed();
        Ok(r.rows_affected() > 0)
    }

    pub async fn delete_project(&self, id: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        sqlx::query(&self.q("DELETE FROM project_members WHERE project_id = ?"))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for table in ["robots", "immutable_rules", "retention_policies", "webhook_policies"] {
            sqlx::query(&self.q(&format!("DELETE FROM {table} WHERE project_id = ?")))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let r = sqlx::query(&self.q("DELETE FROM projects WHERE id = ?"))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.changed();
        Ok(r.rows_affected() > 0)
    }

    /// Number of repositories with at least one manifest in the project.
    /// Bytes the project's repositories hold: each blob and manifest counted
    /// once however many repositories of the project share it.
    pub async fn project_storage(&self, project: &str) -> Result<i64> {
        let pattern = format!("{}/%", like_escape(project));
        let sum = match self.dialect {
            Dialect::Postgres => "CAST(COALESCE(SUM(size), 0) AS BIGINT)",
            Dialect::Mysql => "CAST(COALESCE(SUM(size), 0) AS SIGNED)",
            Dialect::Sqlite => "COALESCE(SUM(size), 0)",
        };
        let sql = format!(
            "SELECT {sum} FROM (\
             SELECT b.digest, b.size FROM blobs b \
             JOIN repository_blobs rb ON rb.digest = b.digest \
             JOIN repositories r ON r.id = rb.repository_id WHERE r.name LIKE ? ESCAPE '!' \
             UNION \
             SELECT m.digest, m.size FROM manifests m \
             JOIN repositories r ON r.id = m.repository_id WHERE r.name LIKE ? ESCAPE '!') t"
        );
        let n: i64 = sqlx::query(&self.q(&sql))
            .bind(&pattern)
            .bind(&pattern)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(n)
    }

    pub async fn project_repository_count(&self, project: &str) -> Result<i64> {
        let pattern = format!("{}/%", like_escape(project));
        let n: i64 = sqlx::query(
            &self.q("SELECT COUNT(*) FROM repositories r WHERE r.name LIKE ? ESCAPE '!' \
             AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id)"),
        )
        .bind(pattern)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        Ok(n)
    }

    // ---- members ----

    pub async fn member_role(&self, project_id: i64, user_id: i64) -> Result<Option<i64>> {
        let row = sqlx::query(&self.q("SELECT role FROM project_members WHERE project_id = ? AND user_id = ?"))
            .bind(project_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
    }

    /// Adds a member or changes the role of an existing one.
    pub async fn set_member(&self, project_id: i64, user_id: i64, role: i64) -> Result<()> {
        let sql = self.dialect.upsert(
            "project_members",
            "project_id, user_id, role, created_at",
            "project_id, user_id",
            &["role"],
        );
        sqlx::query(&self.q(&sql))
            .bind(project_id)
            .bind(user_id)
            .bind(role)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn remove_member(&self, project_id: i64, user_id: i64) -> Result<bool> {
        let r = sqlx::query(&self.q("DELETE FROM project_members WHERE project_id = ? AND user_id = ?"))
            .bind(project_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn members(&self, project_id: i64) -> Result<Vec<MemberRow>> {
        let rows = sqlx::query(&self.q(
            "SELECT m.project_id, m.user_id, u.username, m.role FROM project_members m \
             JOIN users u ON u.id = m.user_id WHERE m.project_id = ? ORDER BY u.username",
        ))
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(MemberRow {
                    project_id: r.try_get(0)?,
                    user_id: r.try_get(1)?,
                    username: r.try_get(2)?,
                    role: r.try_get(3)?,
                })
            })
            .collect()
    }

    // ---- robots ----

    pub async fn create_robot(&self, r: &RobotRow) -> Result<Option<i64>> {
        let now = now_ms();
        let inserted = sqlx::query(&self.q(
            "INSERT INTO robots (name, description, secret_hash, level, project_id, permissions, expires_at, disabled, \
             created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
            .bind(&r.name)
            .bind(&r.description)
            .bind(&r.secret_hash)
            .bind(&r.level)
            .bind(r.project_id)
            .bind(&r.permissions)
            .bind(r.expires_at)
            .bind(i64::from(r.disabled))
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Ok(None),
            other => other?,
        };
        Ok(self.robot_by_name(&r.name).await?.map(|r| r.id))
    }

    pub async fn robot_by_name(&self, name: &str) -> Result<Option<RobotRow>> {
        let sql = format!("SELECT {ROBOT_COLS} FROM robots WHERE name = ?");
        let row = sqlx::query(&self.q(&sql)).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(robot).transpose()
    }

    pub async fn robot_by_id(&self, id: i64) -> Result<Option<RobotRow>> {
        let sql = format!("SELECT {ROBOT_COLS} FROM robots WHERE id = ?");
        let row = sqlx::query(&self.q(&sql)).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(robot).transpose()
    }

    /// Robots of one project, or system robots when `project_id` is None.
    pub async fn list_robots(&self, project_id: Option<i64>) -> Result<Vec<RobotRow>> {
        let rows = match project_id {
            Some(p) => {
                let sql = format!("SELECT {ROBOT_COLS} FROM robots WHERE project_id = ? ORDER BY id");
                sqlx::query(&self.q(&sql)).bind(p).fetch_all(&self.pool).await?
            }
            None => {
                let sql = format!("SELECT {ROBOT_COLS} FROM robots ORDER BY id");
                sqlx::query(&self.q(&sql)).fetch_all(&self.pool).await?
            }
        };
        rows.iter().map(robot).collect()
    }

    pub async fn update_robot(&self, r: &RobotRow) -> Result<bool> {
        let res = sqlx::query(&self.q(
            "UPDATE robots SET description = ?, secret_hash = ?, permissions = ?, expires_at = ?, disabled = ?, updated_at = ? \
             WHERE id = ?",
        ))
        .bind(&r.description)
        .bind(&r.secret_hash)
        .bind(&r.permissions)
        .bind(r.expires_at)
        .bind(i64::from(r.disabled))
        .bind(now_ms())
        .bind(r.id)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    pub async fn delete_robot(&self, id: i64) -> Result<bool> {
        let r = sqlx::query(&self.q("DELETE FROM robots WHERE id = ?"))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- audit log ----

    pub async fn add_audit(&self, a: &AuditRow) -> Result<()> {
        sqlx::query(&self.q(
            "INSERT INTO audit_log (op_time, username, operation, resource_type, resource, success, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(a.op_time)
        .bind(&a.username)
        .bind(&a.operation)
        .bind(&a.resource_type)
        .bind(&a.resource)
        .bind(i64::from(a.success))
        .bind(&a.detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Newest first, one page, and the total.
    pub async fn list_audit(&self, f: &AuditFilter, offset: i64, limit: i64) -> Result<(Vec<AuditRow>, i64)> {
        let mut filter = String::from("1 = 1");
        if f.username.is_some() {
            filter.push_str(" AND username = ?");
        }
        if f.operation.is_some() {
            filter.push_str(" AND operation = ?");
        }
        if f.resource_type.is_some() {
            filter.push_str(" AND resource_type = ?");
        }
        if f.resource_prefix.is_some() {
            filter.push_str(" AND resource LIKE ? ESCAPE '!'");
        }
        if f.from_ms.is_some() {
            filter.push_str(" AND op_time >= ?");
        }
        if f.to_ms.is_some() {
            filter.push_str(" AND op_time <= ?");
        }
        let count_sql = format!("SELECT COUNT(*) FROM audit_log WHERE {filter}");
        let list_sql = format!(
            "SELECT id, op_time, username, operation, resource_type, resource, success, detail FROM audit_log \
             WHERE {filter} ORDER BY id DESC LIMIT ? OFFSET ?"
        );
        let count_sql = self.q(&count_sql);
        let list_sql = self.q(&list_sql);
        let mut count = sqlx::query(&count_sql);
        let mut list = sqlx::query(&list_sql);
        for v in [&f.username, &f.operation, &f.resource_type].into_iter().flatten() {
            count = count.bind(v.clone());
            list = list.bind(v.clone());
        }
        if let Some(p) = &f.resource_prefix {
            let pat = format!("{}%", like_escape(p));
            count = count.bind(pat.clone());
            list = list.bind(pat);
        }
        for v in [f.from_ms, f.to_ms].into_iter().flatten() {
            count = count.bind(v);
            list = list.bind(v);
        }
        let total: i64 = count.fetch_one(&self.pool).await?.try_get(0)?;
        let rows = list.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        Ok((rows.iter().map(audit).collect::<Result<_>>()?, total))
    }

    // ---- settings ----

    pub async fn setting(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query(&self.q("SELECT value FROM settings WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| text(&r, "value")).transpose()
    }

    pub async fn set_setting(&self, name: &str, value: &str) -> Result<()> {
        let sql = self.dialect.upsert("settings", "name, value", "name", &["value"]);
        sqlx::query(&self.q(&sql))
            .bind(name)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores `value` unless a value is already there; returns the stored one.
    /// Replicas starting together agree on one value.
    pub async fn setting_or_insert(&self, name: &str, value: &str) -> Result<String> {
        let sql = self.dialect.insert_ignore("settings", "name, value", "name");
        sqlx::query(&self.q(&sql))
            .bind(name)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(self.setting(name).await?.expect("setting exists after insert"))
    }
}

/// A signed-in browser session.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRow {
    pub user_id: i64,
    pub csrf: String,
    pub expires_at: i64,
}

impl Db {
    /// Stores a session under the hash of its cookie.
    pub async fn create_session(&self, id_hash: &str, user_id: i64, csrf: &str, expires_at: i64) -> Result<()> {
        sqlx::query(&self.q("INSERT INTO sessions (id, user_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)"))
            .bind(id_hash)
            .bind(user_id)
            .bind(csrf)
            .bind(now_ms())
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A session that has not expired.
    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionRow>> {
        let row =
            sqlx::query(&self.q("SELECT user_id, csrf, expires_at FROM sessions WHERE id = ? AND expires_at > ?"))
                .bind(id_hash)
                .bind(now_ms())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(SessionRow {
                user_id: r.try_get(0)?,
                csrf: text(&r, "csrf")?,
                expires_at: r.try_get(2)?,
            })
        })
        .transpose()
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<bool> {
        let r = sqlx::query(&self.q("DELETE FROM sessions WHERE id = ?"))
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Removes expired sessions; returns how many.
    pub async fn purge_sessions(&self) -> Result<u64> {
        let r = sqlx::query(&self.q("DELETE FROM sessions WHERE expires_at <= ?"))
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }
}

/// A vanity import path kept in the database.
#[derive(Clone, Debug, PartialEq)]
pub struct VanityRow {
    pub id: i64,
    pub project_id: i64,
    pub path: String,
    pub repo: String,
    pub vcs: String,
    /// Empty when none.
    pub display: String,
    /// Empty when none.
    pub subdirectory: String,
}

fn vanity(r: &AnyRow) -> Result<VanityRow> {
    Ok(VanityRow {
        id: r.try_get("id")?,
        project_id: r.try_get("project_id")?,
        path: text(r, "path")?,
        repo: text(r, "repo")?,
        vcs: text(r, "vcs")?,
        display: text(r, "display")?,
        subdirectory: text(r, "subdirectory")?,
    })
}

const VANITY_COLS: &str = "id, project_id, path, repo, vcs, display, subdirectory";

impl Db {
    /// Stores a vanity path. None when the path is taken.
    pub async fn create_vanity(&self, v: &VanityRow) -> Result<Option<i64>> {
        let r = sqlx::query(&self.q(
            "INSERT INTO vanity_paths (project_id, path, repo, vcs, display, subdirectory, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(v.project_id)
        .bind(&v.path)
        .bind(&v.repo)
        .bind(&v.vcs)
        .bind(&v.display)
        .bind(&v.subdirectory)
        .bind(now_ms())
        .execute(&self.pool)
        .await;
        match r {
            Err(e) if is_unique_violation(&e) => return Ok(None),
            other => other?,
        };
        let sql = format!("SELECT {VANITY_COLS} FROM vanity_paths WHERE path = ?");
        let row = sqlx::query(&self.q(&sql)).bind(&v.path).fetch_one(&self.pool).await?;
        Ok(Some(vanity(&row)?.id))
    }

    /// Vanity paths of one project, or all when None.
    pub async fn vanity_paths(&self, project_id: Option<i64>) -> Result<Vec<VanityRow>> {
        let rows = match project_id {
            Some(p) => {
                let sql = format!("SELECT {VANITY_COLS} FROM vanity_paths WHERE project_id = ? ORDER BY path");
                sqlx::query(&self.q(&sql)).bind(p).fetch_all(&self.pool).await?
            }
            None => {
                let sql = format!("SELECT {VANITY_COLS} FROM vanity_paths ORDER BY path");
                sqlx::query(&self.q(&sql)).fetch_all(&self.pool).await?
            }
        };
        rows.iter().map(vanity).collect()
    }

    pub async fn delete_vanity(&self, project_id: i64, id: i64) -> Result<bool> {
        let r = sqlx::query(&self.q("DELETE FROM vanity_paths WHERE project_id = ? AND id = ?"))
            .bind(project_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}

impl Db {
    /// Takes or renews the lease `name` for `holder` until `ttl_ms` from now.
    /// True when `holder` holds it: nobody did, it was already `holder`'s, or
    /// the previous holder's lease ran out.
    pub async fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let now = now_ms();
        let sql = self.dialect.insert_ignore("leases", "name, holder, expires_at", "name");
        sqlx::query(&self.q(&sql))
            .bind(name)
            .bind(holder)
            .bind(now + ttl_ms)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            &self.q("UPDATE leases SET holder = ?, expires_at = ? WHERE name = ? AND (holder = ? OR expires_at < ?)"),
        )
        .bind(holder)
        .bind(now + ttl_ms)
        .bind(name)
        .bind(holder)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(&self.q("SELECT holder FROM leases WHERE name = ?"))
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(text(&row, "holder")? == holder)
    }
}
