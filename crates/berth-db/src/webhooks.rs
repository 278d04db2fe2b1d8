//! Webhook policies of projects. Their deliveries are jobs (kind `webhook`).

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{now_ms, text, Db, DbError, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct WebhookRow {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    pub enabled: bool,
    /// JSON: event types and targets, secrets sealed.
    pub spec: String,
    pub creator: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLS: &str = "id, project_id, name, enabled, spec, creator, created_at, updated_at";

fn row(r: &AnyRow) -> Result<WebhookRow> {
    Ok(WebhookRow {
        id: r.try_get("id")?,
        project_id: r.try_get("project_id")?,
        name: text(r, "name")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        spec: text(r, "spec")?,
        creator: text(r, "creator")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn taken(e: sqlx::Error, name: &str) -> DbError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            DbError::Conflict(format!("the project has a webhook named {name:?} already"))
        }
        _ => e.into(),
    }
}

impl Db {
    pub async fn create_webhook(&self, w: &WebhookRow) -> Result<i64> {
        let now = now_ms();
        let sql = self.returning_id(
            "INSERT INTO webhook_policies (project_id, name, enabled, spec, creator, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        );
        let q = sqlx::query(&sql)
            .bind(w.project_id)
            .bind(&w.name)
            .bind(i64::from(w.enabled))
            .bind(&w.spec)
            .bind(&w.creator)
            .bind(now)
            .bind(now);
        self.insert_id(q).await.map_err(|e| match e {
            DbError::Sqlx(e) => taken(e, &w.name),
            e => e,
        })
    }

    pub async fn update_webhook(&self, w: &WebhookRow) -> Result<bool> {
        let r = sqlx::query(&self.q(
            "UPDATE webhook_policies SET name = ?, enabled = ?, spec = ?, updated_at = ? WHERE id = ? AND project_id = ?",
        ))
        .bind(&w.name)
        .bind(i64::from(w.enabled))
        .bind(&w.spec)
        .bind(now_ms())
        .bind(w.id)
        .bind(w.project_id)
        .execute(&self.pool)
        .await
        .map_err(|e| taken(e, &w.name))?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn webhook(&self, project_id: i64, id: i64) -> Result<Option<WebhookRow>> {
        let r = sqlx::query(&self.q(&format!(
            "SELECT {COLS} FROM webhook_policies WHERE id = ? AND project_id = ?"
        )))
        .bind(id)
        .bind(project_id)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(row).transpose()
    }

    pub async fn webhook_by_id(&self, id: i64) -> Result<Option<WebhookRow>> {
        let r = sqlx::query(&self.q(&format!("SELECT {COLS} FROM webhook_policies WHERE id = ?")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(row).transpose()
    }

    /// A project's webhook policies, by id.
    pub async fn webhooks(&self, project_id: i64) -> Result<Vec<WebhookRow>> {
        let rows = sqlx::query(&self.q(&format!(
            "SELECT {COLS} FROM webhook_policies WHERE project_id = ? ORDER BY id"
        )))
        .bind(project_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row).collect()
    }

    pub async fn delete_webhook(&self, project_id: i64, id: i64) -> Result<bool> {
        let r = sqlx::query(&self.q("DELETE FROM webhook_policies WHERE id = ? AND project_id = ?"))
            .bind(id)
            .bind(project_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }
}
