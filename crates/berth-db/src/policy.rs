//! Per-project guard rails (tag immutability rules, quotas, retention
//! policies) and cron schedules, as stored rows. What they mean is decided
//! in berth-core; here they are only kept.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{like_escape, now_ms, text, Db, Dialect, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct ImmutableRuleRow {
    pub id: i64,
    pub project_id: i64,
    pub repo_pattern: String,
    /// The rule covers repositories the pattern does not match.
    pub repo_exclude: bool,
    pub tag_pattern: String,
    pub tag_exclude: bool,
    pub disabled: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RetentionRow {
    pub id: i64,
    pub project_id: i64,
    /// JSON.
    pub rules: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An artifact as retention sees it: a top-level manifest (not a child of
/// an index, not a referrer), with its tags and times.
#[derive(Clone, Debug, PartialEq)]
pub struct ArtifactRow {
    pub digest: String,
    pub pushed_at: i64,
    pub pulled_at: Option<i64>,
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleRow {
    pub name: String,
    pub kind: String,
    /// JSON.
    pub args: String,
    pub cron: String,
    pub next_run_at: i64,
    pub updated_at: i64,
}

fn rule_row(r: &AnyRow) -> Result<ImmutableRuleRow> {
    Ok(ImmutableRuleRow {
        id: r.try_get("id")?,
        project_id: r.try_get("project_id")?,
        repo_pattern: text(r, "repo_pattern")?,
        repo_exclude: r.try_get::<i64, _>("repo_exclude")? != 0,
        tag_pattern: text(r, "tag_pattern")?,
        tag_exclude: r.try_get::<i64, _>("tag_exclude")? != 0,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
    })
}

fn schedule_row(r: &AnyRow) -> Result<ScheduleRow> {
    Ok(ScheduleRow {
        name: text(r, "name")?,
        kind: text(r, "kind")?,
        args: text(r, "args")?,
        cron: text(r, "cron")?,
        next_run_at: r.try_get("next_run_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

const RULE_COLS: &str = "id, project_id, repo_pattern, repo_exclude, tag_pattern, tag_exclude, disabled";
const SCHEDULE_COLS: &str = "name, kind, args, cron, next_run_at, updated_at";

impl Db {
    // ---- tag immutability ----

    pub async fn immutable_rules(&self, project_id: i64) -> Result<Vec<ImmutableRuleRow>> {
        let rows = sqlx::query(&self.q(&format!(
            "SELECT {RULE_COLS} FROM immutable_rules WHERE project_id = ? ORDER BY id"
        )))
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rule_row).collect()
    }

    /// The enabled rules of the project a repository belongs to (its first
    /// path component), in one query.
    pub async fn immutable_rules_for_repository(&self, repository: &str) -> Result<Vec<ImmutableRuleRow>> {
        let Some((project, _)) = repository.split_once('/') else {
            return Ok(Vec::new());
        };
        let cols: Vec<String> = RULE_COLS.split(", ").map(|c| format!("i.{c}")).collect();
        let rows = sqlx::query(&self.q(&format!(
            "SELECT {} FROM immutable_rules i JOIN projects p ON p.id = i.project_id \
             WHERE p.name = ? AND i.disabled = 0 ORDER BY i.id",
            cols.join(", ")
        )))
        .bind(project)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rule_row).collect()
    }

    pub async fn add_immutable_rule(&self, rule: &ImmutableRuleRow) -> Result<i64> {
        let mut sql = "INSERT INTO immutable_rules (project_id, repo_pattern, repo_exclude, tag_pattern, \
                       tag_exclude, disabled, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            .to_string();
        let returning = self.dialect != Dialect::Mysql;
        if returning {
            sql.push_str(" RETURNING id");
        }
        let sql = self.q(&sql).into_owned();
        let q = sqlx::query(&sql)
            .bind(rule.project_id)
            .bind(&rule.repo_pattern)
            .bind(i64::from(rule.repo_exclude))
            .bind(&rule.tag_pattern)
            .bind(i64::from(rule.tag_exclude))
            .bind(i64::from(rule.disabled))
            .bind(now_ms());
        if returning {
            Ok(q.fetch_one(&self.pool).await?.try_get(0)?)
        } else {
            let r = q.execute(&self.pool).await?;
            Ok(r.last_insert_id()
                .ok_or_else(|| sqlx::Error::Protocol("no id for the new rule".into()))?)
        }
    }

    /// Replaces a rule's patterns and flag; false if the project has no such rule.
    pub async fn update_immutable_rule(&self, rule: &ImmutableRuleRow) -> Result<bool> {
        let r = sqlx::query(&self.q(
            "UPDATE immutable_rules SET repo_pattern = ?, repo_exclude = ?, tag_pattern = ?, tag_exclude = ?, \
             disabled = ? WHERE id = ? AND project_id = ?",
        ))
        .bind(&rule.repo_pattern)
        .bind(i64::from(rule.repo_exclude))
        .bind(&rule.tag_pattern)
        .bind(i64::from(rule.tag_exclude))
        .bind(i64::from(rule.disabled))
        .bind(rule.id)
        .bind(rule.project_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn delete_immutable_rule(&self, project_id: i64, id: i64) -> Result<bool> {
        let r = sqlx::query(&self.q("DELETE FROM immutable_rules WHERE id = ? AND project_id = ?"))
            .bind(id)
            .bind(project_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- quotas ----

    /// Sets a project's limits (-1: none).
    pub async fn set_project_quota(&self, project_id: i64, storage_limit: i64, count_limit: i64) -> Result<bool> {
        let r =
            sqlx::query(&self.q("UPDATE projects SET storage_limit = ?, count_limit = ?, updated_at = ? WHERE id = ?"))
                .bind(storage_limit)
                .bind(count_limit)
                .bind(now_ms())
                .bind(project_id)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Distinct artifacts (manifests) in the project's repositories.
    pub async fn project_artifact_count(&self, project: &str) -> Result<i64> {
        let pattern = format!("{}/%", like_escape(project));
        let n: i64 = sqlx::query(
            &self.q("SELECT COUNT(*) FROM (SELECT DISTINCT m.digest FROM manifests m \
             JOIN repositories r ON r.id = m.repository_id WHERE r.name LIKE ? ESCAPE '!') t"),
        )
        .bind(pattern)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        Ok(n)
    }

    /// Whether the project's repositories already hold an object (blob or
    /// manifest): such an object adds nothing to the project's usage.
    pub async fn project_holds(&self, project: &str, digest: &str) -> Result<bool> {
        let pattern = format!("{}/%", like_escape(project));
        let row = sqlx::query(&self.q(
            "SELECT 1 FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
             WHERE rb.digest = ? AND r.name LIKE ? ESCAPE '!' \
             UNION ALL SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repository_id \
             WHERE m.digest = ? AND r.name LIKE ? ESCAPE '!'",
        ))
        .bind(digest)
        .bind(&pattern)
        .bind(digest)
        .bind(&pattern)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    // ---- retention ----

    /// The repository's artifacts, newest push first.
    pub async fn retention_artifacts(&self, repo: i64) -> Result<Vec<ArtifactRow>> {
        let rows = sqlx::query(
            &self.q("SELECT m.digest, m.pushed_at, m.pulled_at, t.name FROM manifests m \
             LEFT JOIN tags t ON t.repository_id = m.repository_id AND t.manifest_digest = m.digest \
             WHERE m.repository_id = ? AND m.subject IS NULL AND NOT EXISTS (SELECT 1 FROM manifest_references x \
             WHERE x.repository_id = m.repository_id AND x.target_digest = m.digest AND x.target_is_manifest = 1) \
             ORDER BY m.pushed_at DESC, m.digest, t.name"),
        )
        .bind(repo)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<ArtifactRow> = Vec::new();
        for r in &rows {
            let digest = text(r, "digest")?;
            let tag = crate::opt_string(r, "name")?;
            match out.last_mut() {
                Some(a) if a.digest == digest => a.tags.extend(tag),
                _ => out.push(ArtifactRow {
                    digest,
                    pushed_at: r.try_get("pushed_at")?,
                    pulled_at: r.try_get("pulled_at")?,
                    tags: tag.into_iter().collect(),
                }),
            }
        }
        Ok(out)
    }

    pub async fn retention_policy(&self, project_id: i64) -> Result<Option<RetentionRow>> {
        let row = sqlx::query(
            &self
                .q("SELECT id, project_id, rules, created_at, updated_at FROM retention_policies WHERE project_id = ?"),
        )
        .bind(project_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(RetentionRow {
                id: r.try_get("id")?,
                project_id: r.try_get("project_id")?,
                rules: text(&r, "rules")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .transpose()
    }

    pub async fn retention_policy_by_id(&self, id: i64) -> Result<Option<RetentionRow>> {
        let project: Option<i64> = sqlx::query(&self.q("SELECT project_id FROM retention_policies WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        match project {
            Some(p) => self.retention_policy(p).await,
            None => Ok(None),
        }
    }

    /// Creates or replaces the project's policy; returns its id.
    pub async fn set_retention_policy(&self, project_id: i64, rules: &str) -> Result<i64> {
        let now = now_ms();
        let sql = self.dialect.upsert(
            "retention_policies",
            "project_id, rules, created_at, updated_at",
            "project_id",
            &["rules", "updated_at"],
        );
        sqlx::query(&self.q(&sql))
            .bind(project_id)
            .bind(rules)
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await?;
        let id: i64 = sqlx::query(&self.q("SELECT id FROM retention_policies WHERE project_id = ?"))
            .bind(project_id)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(id)
    }

    pub async fn delete_retention_policy(&self, id: i64) -> Result<bool> {
        let r = sqlx::query(&self.q("DELETE FROM retention_policies WHERE id = ?"))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- schedules ----

    /// Creates or replaces a schedule.
    pub async fn set_schedule(&self, name: &str, kind: &str, args: &str, cron: &str, next_run_at: i64) -> Result<()> {
        let sql = self.dialect.upsert(
            "schedules",
            SCHEDULE_COLS,
            "name",
            &["kind", "args", "cron", "next_run_at", "updated_at"],
        );
        sqlx::query(&self.q(&sql))
            .bind(name)
            .bind(kind)
            .bind(args)
            .bind(cron)
            .bind(next_run_at)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<bool> {
        let r = sqlx::query(&self.q("DELETE FROM schedules WHERE name = ?"))
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn schedule(&self, name: &str) -> Result<Option<ScheduleRow>> {
        let row = sqlx::query(&self.q(&format!("SELECT {SCHEDULE_COLS} FROM schedules WHERE name = ?")))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(schedule_row).transpose()
    }

    /// Schedules whose next run is due.
    pub async fn due_schedules(&self, now: i64) -> Result<Vec<ScheduleRow>> {
        let rows = sqlx::query(&self.q(&format!(
            "SELECT {SCHEDULE_COLS} FROM schedules WHERE next_run_at <= ? ORDER BY next_run_at"
        )))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(schedule_row).collect()
    }

    /// Moves a due schedule to its next time, if no other replica moved it
    /// first: true means this caller won and starts the run.
    pub async fn advance_schedule(&self, name: &str, was: i64, next: i64) -> Result<bool> {
        let r = sqlx::query(&self.q("UPDATE schedules SET next_run_at = ? WHERE name = ? AND next_run_at = ?"))
            .bind(next)
            .bind(name)
            .bind(was)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}

/// `FOR UPDATE` where the database has row locks that a later read in the
/// same transaction needs to see committed rows.
pub(crate) fn locking_read(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "",
        _ => " FOR UPDATE",
    }
}
