//! What garbage collection asks of the database, and the touches that keep
//! it from taking what a push depends on.
//!
//! Every stored object (blob or manifest bytes) has a row in `blobs`, and
//! `touched_at` is when a push last created it or depended on it. The rules:
//!
//! - a push touches an object's row *before* its bytes are published, and a
//!   manifest touches every object it references in the transaction that
//!   records it (failing if one is gone);
//! - collection deletes a row only if nothing references the object and its
//!   `touched_at` is older than the safety window, in one conditional
//!   statement, and removes the bytes before that deletion commits.
//!
//! Row locks (PostgreSQL, MySQL) or the single writer (SQLite) order each
//! touch and each deletion, so either the touch comes first and the deletion
//! does not happen, or the deletion comes first and the touch fails (or, for
//! a new upload, recreates the row before publishing the bytes again).

use sqlx::Row;

use crate::{now_ms, Db, DbError, Result};

/// Sets `touched_at` to now, or one past its value if that is not earlier,
/// so that the UPDATE always changes the row: MySQL reports unchanged rows
/// as unaffected.
const TOUCH: &str = "touched_at = CASE WHEN touched_at >= ? THEN touched_at + 1 ELSE ? END";

/// A stored object that collection may remove.
#[derive(Clone, Debug, PartialEq)]
pub struct Unreferenced {
    pub digest: String,
    pub size: i64,
}

/// A manifest that no tag and no other manifest holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Untagged {
    pub repository_id: i64,
    pub repository: String,
    pub digest: String,
    pub size: i64,
}

const UNREFERENCED: &str = "NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.target_digest = ?) \
     AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = ?)";

impl Db {
    /// Records that a stored object is needed now, creating its row if it
    /// has none. Called before its bytes are published.
    pub async fn touch_object(&self, digest: &str, size: i64) -> Result<()> {
        let now = now_ms();
        let sql = self.dialect.upsert(
            "blobs",
            "digest, size, created_at, touched_at",
            "digest",
            &["touched_at"],
        );
        sqlx::query(&self.q(&sql))
            .bind(digest)
            .bind(size)
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Links a stored blob into a repository (a cross-repository mount) and
    /// touches it, in one transaction. None if the blob is not stored.
    pub async fn link_existing_blob(&self, repo: i64, digest: &str) -> Result<Option<i64>> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let touched = sqlx::query(&self.q(&format!("UPDATE blobs SET {TOUCH} WHERE digest = ?")))
            .bind(now)
            .bind(now)
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        if touched.rows_affected() == 0 {
            return Ok(None);
        }
        let size: i64 = sqlx::query(&self.q("SELECT size FROM blobs WHERE digest = ?"))
            .bind(digest)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let sql = self.dialect.insert_ignore(
            "repository_blobs",
            "repository_id, digest, created_at",
            "repository_id, digest",
        );
        sqlx::query(&self.q(&sql))
            .bind(repo)
            .bind(digest)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(size))
    }

    /// Touches each object inside a transaction; the first one that is gone
    /// fails the transaction with [`DbError::Missing`].
    pub(crate) async fn touch_all(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        digests: impl Iterator<Item = &str>,
    ) -> Result<()> {
        let now = now_ms();
        let sql = self
            .q(&format!("UPDATE blobs SET {TOUCH} WHERE digest = ?"))
            .into_owned();
        for d in digests {
            let r = sqlx::query(&sql).bind(now).bind(now).bind(d).execute(&mut **tx).await?;
            if r.rows_affected() == 0 {
                return Err(DbError::Missing(d.to_string()));
            }
        }
        Ok(())
    }

    /// Stored objects that nothing references and nobody touched before
    /// `before_ms`, in digest order after `after`, at most `limit`.
    pub async fn unreferenced_objects(&self, before_ms: i64, after: &str, limit: i64) -> Result<Vec<Unreferenced>> {
        let rows = sqlx::query(&self.q(
            "SELECT b.digest, b.size FROM blobs b WHERE b.touched_at < ? AND b.digest > ? \
             AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.target_digest = b.digest) \
             AND NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = b.digest) \
             ORDER BY b.digest LIMIT ?",
        ))
        .bind(before_ms)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Unreferenced {
                    digest: crate::text(r, "digest")?,
                    size: r.try_get("size")?,
                })
            })
            .collect()
    }

    /// Whether a stored object has a row.
    pub async fn object_exists(&self, digest: &str) -> Result<bool> {
        Ok(sqlx::query(&self.q("SELECT 1 FROM blobs WHERE digest = ?"))
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Deletes an object's row and its repository links if it is still
    /// unreferenced and untouched since `before_ms`. `remove_bytes` runs
    /// after the conditional delete and before the commit, while the row is
    /// locked; if it fails, nothing is deleted. True if the object went.
    pub async fn delete_object_if_unused<F>(&self, digest: &str, before_ms: i64, remove_bytes: F) -> Result<bool>
    where
        F: AsyncFnOnce() -> std::result::Result<(), String>,
    {
        let mut tx = self.begin().await?;
        // Lock the row before reading anything about it. A manifest put
        // touches the row in its transaction, so this waits for any put in
        // flight, and the statements below (each with a fresh snapshot under
        // READ COMMITTED) see what it committed. Without the lock,
        // PostgreSQL would re-check only the row's own columns after the
        // wait, with subqueries still evaluated on the old snapshot, and
        // could delete the row of a manifest that had just been committed.
        if self.dialect != crate::Dialect::Sqlite {
            let locked = sqlx::query(&self.q("SELECT digest FROM blobs WHERE digest = ? FOR UPDATE"))
                .bind(digest)
                .fetch_optional(&mut *tx)
                .await?;
            if locked.is_none() {
                return Ok(false);
            }
        }
        // Links first (they refer to the row), but only of an object that is
        // deletable now; then the row itself, under the same conditions. A
        // touch that lands between the two makes the second delete nothing,
        // and the transaction is dropped with the links.
        sqlx::query(&self.q(&format!(
            "DELETE FROM repository_blobs WHERE digest = ? AND EXISTS \
             (SELECT 1 FROM blobs b WHERE b.digest = ? AND b.touched_at < ?) AND {UNREFERENCED}"
        )))
        .bind(digest)
        .bind(digest)
        .bind(before_ms)
        .bind(digest)
        .bind(digest)
        .execute(&mut *tx)
        .await?;
        let gone = sqlx::query(&self.q(&format!(
            "DELETE FROM blobs WHERE digest = ? AND touched_at < ? AND {UNREFERENCED}"
        )))
        .bind(digest)
        .bind(before_ms)
        .bind(digest)
        .bind(digest)
        .execute(&mut *tx)
        .await;
        let gone = match gone {
            // A push linked the object after the links were deleted (it
            // touched the row just before the window's end): it is in use,
            // and the transaction is dropped with everything it did.
            Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => return Ok(false),
            other => other?,
        };
        if gone.rows_affected() == 0 {
            return Ok(false);
        }
        remove_bytes()
            .await
            .map_err(|e| DbError::Sqlx(sqlx::Error::Protocol(format!("removing {digest}: {e}"))))?;
        tx.commit().await?;
        Ok(true)
    }

    /// Manifests pushed before `before_ms` that no tag points at, that no
    /// other manifest of their repository references, and that are not a
    /// referrer of a manifest still there. At most `limit`.
    pub async fn untagged_manifests(&self, before_ms: i64, limit: i64) -> Result<Vec<Untagged>> {
        let rows = sqlx::query(&self.q(
            "SELECT m.repository_id, r.name, m.digest, m.size FROM manifests m \
             JOIN repositories r ON r.id = m.repository_id WHERE m.pushed_at < ? \
             AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.manifest_digest = m.digest) \
             AND NOT EXISTS (SELECT 1 FROM manifest_references x WHERE x.repository_id = m.repository_id AND x.target_digest = m.digest) \
             AND (m.subject IS NULL OR NOT EXISTS (SELECT 1 FROM manifests s WHERE s.repository_id = m.repository_id AND s.digest = m.subject)) \
             ORDER BY m.repository_id, m.digest LIMIT ?",
        ))
        .bind(before_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Untagged {
                    repository_id: r.try_get("repository_id")?,
                    repository: crate::text(r, "name")?,
                    digest: crate::text(r, "digest")?,
                    size: r.try_get("size")?,
                })
            })
            .collect()
    }

    /// Deletes a manifest if it is still untagged, unreferenced, and pushed
    /// before `before_ms`, with its references. True if it went.
    pub async fn delete_manifest_if_untagged(&self, repo: i64, digest: &str, before_ms: i64) -> Result<bool> {
        let mut tx = self.begin().await?;
        let gone = sqlx::query(&self.q(
            "DELETE FROM manifests WHERE repository_id = ? AND digest = ? AND pushed_at < ? \
             AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = ? AND t.manifest_digest = ?) \
             AND NOT EXISTS (SELECT 1 FROM manifest_references x WHERE x.repository_id = ? AND x.target_digest = ?)",
        ))
        .bind(repo)
        .bind(digest)
        .bind(before_ms)
        .bind(repo)
        .bind(digest)
        .bind(repo)
        .bind(digest)
        .execute(&mut *tx)
        .await?;
        if gone.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(&self.q("DELETE FROM manifest_references WHERE repository_id = ? AND manifest_digest = ?"))
            .bind(repo)
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.changed();
        Ok(true)
    }
}

impl Db {
    /// Every stored object's row, in digest order after `after`, at most
    /// `limit`: what a scrub reads back.
    pub async fn objects_page(&self, after: &str, limit: i64) -> Result<Vec<Unreferenced>> {
        let rows = sqlx::query(&self.q("SELECT digest, size FROM blobs WHERE digest > ? ORDER BY digest LIMIT ?"))
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Unreferenced {
                    digest: crate::text(r, "digest")?,
                    size: r.try_get("size")?,
                })
            })
            .collect()
    }

    /// Metadata that points at content with no stored-object row: links of
    /// repositories to blobs, manifests, and manifests' references. One line
    /// per finding, at most `limit`.
    pub async fn dangling_metadata(&self, limit: i64) -> Result<Vec<String>> {
        let checks = [
            (
                "SELECT r.name, rb.digest FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id \
                 WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = rb.digest) ORDER BY r.name LIMIT ?",
                "links blob",
            ),
            (
                "SELECT r.name, m.digest FROM manifests m JOIN repositories r ON r.id = m.repository_id \
                 WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = m.digest) ORDER BY r.name LIMIT ?",
                "holds manifest",
            ),
            (
                "SELECT r.name, x.target_digest AS digest FROM manifest_references x JOIN repositories r ON r.id = x.repository_id \
                 WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = x.target_digest) ORDER BY r.name LIMIT ?",
                "has a manifest that references",
            ),
        ];
        let mut found = Vec::new();
        for (sql, what) in checks {
            for r in sqlx::query(&self.q(sql)).bind(limit).fetch_all(&self.pool).await? {
                found.push(format!(
                    "{} {what} {}, which is not stored",
                    crate::text(&r, "name")?,
                    crate::text(&r, "digest")?
                ));
            }
        }
        found.truncate(limit as usize);
        Ok(found)
    }
}
