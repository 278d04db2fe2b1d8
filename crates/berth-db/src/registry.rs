//! Repositories, blobs, manifests, tags and upload sessions.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{like_escape, now_ms, opt_string, Db, Result};

/// A manifest as stored: everything but its bytes, which live in blob storage.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestRow {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub subject: Option<String>,
    pub size: i64,
    /// JSON object of the manifest's annotations.
    pub annotations: Option<String>,
    pub pushed_at: i64,
}

/// What a manifest points at: a blob or a child manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestReference {
    pub digest: String,
    pub is_manifest: bool,
}

/// A manifest to insert, with what it references and an optional tag.
#[derive(Clone, Debug)]
pub struct ManifestRecord {
    pub row: ManifestRow,
    pub references: Vec<ManifestReference>,
    pub tag: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct UploadRow {
    pub id: String,
    pub repository: String,
    pub created_at: i64,
    pub updated_at: i64,
}

fn manifest_row(r: &AnyRow) -> Result<ManifestRow> {
    Ok(ManifestRow {
        digest: r.try_get("digest")?,
        media_type: r.try_get("media_type")?,
        artifact_type: opt_string(r, "artifact_type")?,
        subject: opt_string(r, "subject")?,
        size: r.try_get("size")?,
        annotations: opt_string(r, "annotations")?,
        pushed_at: r.try_get("pushed_at")?,
    })
}

const MANIFEST_COLS: &str = "digest, media_type, artifact_type, subject, size, annotations, pushed_at";

impl Db {
    /// The id of a repository, if it exists.
    pub async fn repository_id(&self, name: &str) -> Result<Option<i64>> {
        let row = sqlx::query(&self.q("SELECT id FROM repositories WHERE name = ?"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
    }

    /// The id of a repository, created if needed.
    pub async fn ensure_repository(&self, name: &str) -> Result<i64> {
        if let Some(id) = self.repository_id(name).await? {
            return Ok(id);
        }
        let sql = self.dialect.insert_ignore("repositories", "name, created_at", "name");
        sqlx::query(&self.q(&sql))
            .bind(name)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(self.repository_id(name).await?.expect("repository exists after insert"))
    }

    /// Size of a blob linked to the repository, or None.
    pub async fn repository_blob(&self, repo: i64, digest: &str) -> Result<Option<i64>> {
        let row = sqlx::query(&self.q(
            "SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
             WHERE rb.repository_id = ? AND rb.digest = ?",
        ))
        .bind(repo)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
    }

    /// Records a committed blob and links it to the repository, in one transaction.
    /// When `upload` is given, that session is removed in the same transaction.
    pub async fn link_blob(&self, repo: i64, digest: &str, size: i64, upload: Option<&str>) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin().await?;
        let sql = self
            .dialect
            .insert_ignore("blobs", "digest, size, created_at, touched_at", "digest");
        sqlx::query(&self.q(&sql))
            .bind(digest)
            .bind(size)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
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
        if let Some(id) = upload {
            sqlx::query(&self.q("DELETE FROM uploads WHERE id = ?"))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Digests of manifests in the repository that reference the blob.
    pub async fn blob_referrers(&self, repo: i64, digest: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(&self.q("SELECT manifest_digest FROM manifest_references \
             WHERE repository_id = ? AND target_digest = ? ORDER BY manifest_digest"))
        .bind(repo)
        .bind(digest)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get::<String, _>(0)?)).collect()
    }

    /// Removes the link between a repository and a blob. Returns false if there was none.
    pub async fn unlink_blob(&self, repo: i64, digest: &str) -> Result<bool> {
        let r = sqlx::query(&self.q("DELETE FROM repository_blobs WHERE repository_id = ? AND digest = ?"))
            .bind(repo)
            .bind(digest)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn create_upload(&self, id: &str, repo: i64) -> Result<()> {
        let now = now_ms();
        sqlx::query(&self.q("INSERT INTO uploads (id, repository_id, created_at, updated_at) VALUES (?, ?, ?, ?)"))
            .bind(id)
            .bind(repo)
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn upload(&self, id: &str) -> Result<Option<UploadRow>> {
        let row = sqlx::query(
            &self.q("SELECT u.id, r.name, u.created_at, u.updated_at FROM uploads u \
             JOIN repositories r ON r.id = u.repository_id WHERE u.id = ?"),
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(UploadRow {
                id: r.try_get(0)?,
                repository: r.try_get(1)?,
                created_at: r.try_get(2)?,
                updated_at: r.try_get(3)?,
            })
        })
        .transpose()
    }

    pub async fn touch_upload(&self, id: &str) -> Result<()> {
        sqlx::query(&self.q("UPDATE uploads SET updated_at = ? WHERE id = ?"))
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_upload(&self, id: &str) -> Result<bool> {
        let r = sqlx::query(&self.q("DELETE FROM uploads WHERE id = ?"))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Ids of uploads not written to since `before_ms`.
    pub async fn stale_uploads(&self, before_ms: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(&self.q("SELECT id FROM uploads WHERE updated_at < ? ORDER BY id"))
            .bind(before_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get::<String, _>(0)?)).collect()
    }

    /// A manifest of the repository by digest.
    pub async fn manifest(&self, repo: i64, digest: &str) -> Result<Option<ManifestRow>> {
        let sql = format!("SELECT {MANIFEST_COLS} FROM manifests WHERE repository_id = ? AND digest = ?");
        let row = sqlx::query(&self.q(&sql))
            .bind(repo)
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(manifest_row).transpose()
    }

    /// A manifest found by repository name and tag (or digest, when `by_digest`)
    /// in one query, with the repository's id: the read path of every pull.
    pub async fn named_manifest(
        &self,
        repo: &str,
        reference: &str,
        by_digest: bool,
    ) -> Result<Option<(i64, ManifestRow)>> {
        let cols = MANIFEST_COLS
            .split(", ")
            .map(|c| format!("m.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = if by_digest {
            format!(
                "SELECT r.id AS repo_id, {cols} FROM repositories r JOIN manifests m ON m.repository_id = r.id \
                 WHERE r.name = ? AND m.digest = ?"
            )
        } else {
            format!(
                "SELECT r.id AS repo_id, {cols} FROM repositories r JOIN tags t ON t.repository_id = r.id \
                 JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest \
                 WHERE r.name = ? AND t.name = ?"
            )
        };
        let row = sqlx::query(&self.q(&sql))
            .bind(repo)
            .bind(reference)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref()
            .map(|r| Ok((r.try_get::<i64, _>("repo_id")?, manifest_row(r)?)))
            .transpose()
    }

    /// The manifest a tag points to.
    pub async fn tagged_manifest(&self, repo: i64, tag: &str) -> Result<Option<ManifestRow>> {
        let sql = format!(
            "SELECT {} FROM tags t JOIN manifests m ON m.repository_id = t.repository_id \
             AND m.digest = t.manifest_digest WHERE t.repository_id = ? AND t.name = ?",
            MANIFEST_COLS
                .split(", ")
                .map(|c| format!("m.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let row = sqlx::query(&self.q(&sql))
            .bind(repo)
            .bind(tag)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(manifest_row).transpose()
    }

    /// Inserts a manifest (a no-op if present), its references and its tag, atomically.
    /// The manifest's own bytes and every object it references (blobs and
    /// child manifests) must still be stored: each is touched in the same
    /// transaction, and one that garbage collection removed fails the whole
    /// put with [`crate::DbError::Missing`].
    pub async fn put_manifest(&self, repo: i64, m: &ManifestRecord) -> Result<()> {
        self.put_manifest_guarded(repo, m, false).await
    }

    /// [`Db::put_manifest`], where an `immutable` tag may be created or
    /// pushed again with the same content but never moved: a tag that names
    /// other content fails the put with [`crate::DbError::Immutable`], even
    /// against a concurrent first push of the same tag.
    pub async fn put_manifest_guarded(&self, repo: i64, m: &ManifestRecord, immutable: bool) -> Result<()> {
        let mut tx = self.begin().await?;
        // Its own bytes first, then what it references.
        let own = std::iter::once(m.row.digest.as_str());
        self.touch_all(&mut tx, own.chain(m.references.iter().map(|r| r.digest.as_str())))
            .await?;
        let r = &m.row;
        let sql = self.dialect.insert_ignore(
            "manifests",
            &format!("repository_id, {MANIFEST_COLS}"),
            "repository_id, digest",
        );
        sqlx::query(&self.q(&sql))
            .bind(repo)
            .bind(&r.digest)
            .bind(&r.media_type)
            .bind(r.artifact_type.clone())
            .bind(r.subject.clone())
            .bind(r.size)
            .bind(r.annotations.clone())
            .bind(r.pushed_at)
            .execute(&mut *tx)
            .await?;
        // References are inserted every time (idempotently): MySQL reports a
        // duplicate as affected, so "was it new" cannot be read reliably.
        {
            let sql = self.dialect.insert_ignore(
                "manifest_references",
                "repository_id, manifest_digest, target_digest, target_is_manifest",
                "repository_id, manifest_digest, target_digest",
            );
            for reference in &m.references {
                sqlx::query(&self.q(&sql))
                    .bind(repo)
                    .bind(&r.digest)
                    .bind(&reference.digest)
                    .bind(i64::from(reference.is_manifest))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if let (Some(tag), true) = (&m.tag, immutable) {
            let sql = self.dialect.insert_ignore(
                "tags",
                "repository_id, name, manifest_digest, updated_at",
                "repository_id, name",
            );
            sqlx::query(&self.q(&sql))
                .bind(repo)
                .bind(tag)
                .bind(&r.digest)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            let sql = format!(
                "SELECT manifest_digest FROM tags WHERE repository_id = ? AND name = ?{}",
                crate::policy::locking_read(self.dialect)
            );
            let current = crate::text(
                &sqlx::query(&self.q(&sql))
                    .bind(repo)
                    .bind(tag)
                    .fetch_one(&mut *tx)
                    .await?,
                "manifest_digest",
            )?;
            if current != r.digest {
                return Err(crate::DbError::Immutable(tag.clone()));
            }
        } else if let Some(tag) = &m.tag {
            let sql = self.dialect.upsert(
                "tags",
                "repository_id, name, manifest_digest, updated_at",
                "repository_id, name",
                &["manifest_digest", "updated_at"],
            );
            sqlx::query(&self.q(&sql))
                .bind(repo)
                .bind(tag)
                .bind(&r.digest)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.changed();
        Ok(())
    }

    /// Indexes in the repository that list the manifest as a child.
    /// Figures for monitoring: (blobs stored, their bytes, uploads in progress).
    pub async fn totals(&self) -> Result<(i64, i64, i64)> {
        let sum = match self.dialect() {
            crate::Dialect::Postgres => "CAST(COALESCE(SUM(size), 0) AS BIGINT)",
            crate::Dialect::Mysql => "CAST(COALESCE(SUM(size), 0) AS SIGNED)",
            crate::Dialect::Sqlite => "COALESCE(SUM(size), 0)",
        };
        let r = sqlx::query(&self.q(&format!(
            "SELECT COUNT(*), {sum}, (SELECT COUNT(*) FROM uploads) FROM blobs"
        )))
        .fetch_one(&self.pool)
        .await?;
        Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
    }

    /// Connections the pool holds, and how many of them are idle.
    pub fn pool_state(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    /// Notes a pull of a manifest at `now_ms`, writing at most once per
    /// `every_ms` for each manifest so that busy images cost few writes.
    pub async fn record_pull(&self, repo: i64, digest: &str, now_ms: i64, every_ms: i64) -> Result<()> {
        sqlx::query(&self.q(
            "UPDATE manifests SET pulled_at = ? WHERE repository_id = ? AND digest = ? \
             AND (pulled_at IS NULL OR pulled_at < ?)",
        ))
        .bind(now_ms)
        .bind(repo)
        .bind(digest)
        .bind(now_ms - every_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// When a manifest was last pulled, if ever.
    pub async fn pulled_at(&self, repo: i64, digest: &str) -> Result<Option<i64>> {
        let row = sqlx::query(&self.q("SELECT pulled_at FROM manifests WHERE repository_id = ? AND digest = ?"))
            .bind(repo)
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<Option<i64>, _>(0)?,
            None => None,
        })
    }

    /// Bytes an artifact occupies: its manifest, the blobs it references,
    /// and for an index its children and their blobs, each counted once.
    pub async fn artifact_size(&self, repo: i64, digest: &str) -> Result<i64> {
        let mut seen = std::collections::HashSet::new();
        let mut todo = vec![(digest.to_string(), true)];
        let mut total = 0i64;
        while let Some((d, is_manifest)) = todo.pop() {
            if !seen.insert(d.clone()) {
                continue;
            }
            if is_manifest {
                let Some(m) = self.manifest(repo, &d).await? else {
                    continue;
                };
                total += m.size;
                let refs = sqlx::query(
                    &self.q("SELECT target_digest, target_is_manifest FROM manifest_references \
                     WHERE repository_id = ? AND manifest_digest = ?"),
                )
                .bind(repo)
                .bind(&d)
                .fetch_all(&self.pool)
                .await?;
                for r in refs {
                    let target = opt_string(&r, "target_digest")?.unwrap_or_default();
                    let child: i64 = r.try_get(1)?;
                    todo.push((target, child != 0));
                }
            } else if let Some(size) = self.repository_blob(repo, &d).await? {
                total += size;
            }
        }
        Ok(total)
    }

    pub async fn manifest_parents(&self, repo: i64, digest: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(&self.q("SELECT manifest_digest FROM manifest_references \
             WHERE repository_id = ? AND target_digest = ? AND target_is_manifest = 1 ORDER BY manifest_digest"))
        .bind(repo)
        .bind(digest)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get::<String, _>(0)?)).collect()
    }

    /// Deletes a manifest with its tags and references. Returns false if absent.
    pub async fn delete_manifest(&self, repo: i64, digest: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        // Explicit deletes rather than cascades alone: MySQL ignores inline REFERENCES.
        for sql in [
            "DELETE FROM tags WHERE repository_id = ? AND manifest_digest = ?",
            "DELETE FROM manifest_references WHERE repository_id = ? AND manifest_digest = ?",
        ] {
            sqlx::query(&self.q(sql))
                .bind(repo)
                .bind(digest)
                .execute(&mut *tx)
                .await?;
        }
        let r = sqlx::query(&self.q("DELETE FROM manifests WHERE repository_id = ? AND digest = ?"))
            .bind(repo)
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.changed();
        Ok(r.rows_affected() > 0)
    }

    pub async fn delete_tag(&self, repo: i64, tag: &str) -> Result<bool> {
        let r = sqlx::query(&self.q("DELETE FROM tags WHERE repository_id = ? AND name = ?"))
            .bind(repo)
            .bind(tag)
            .execute(&self.pool)
            .await?;
        self.changed();
        Ok(r.rows_affected() > 0)
    }

    /// Tags of a repository in byte order, after `last`, at most `limit`.
    pub async fn tags(&self, repo: i64, last: Option<&str>, limit: i64) -> Result<Vec<String>> {
        let rows =
            sqlx::query(&self.q("SELECT name FROM tags WHERE repository_id = ? AND name > ? ORDER BY name LIMIT ?"))
                .bind(repo)
                .bind(last.unwrap_or(""))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| Ok(r.try_get::<String, _>(0)?)).collect()
    }

    /// Names of repositories holding at least one manifest, in byte order, after `last`.
    pub async fn repositories(&self, last: Option<&str>, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(&self.q("SELECT r.name FROM repositories r WHERE r.name > ? \
             AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id) \
             ORDER BY r.name LIMIT ?"))
        .bind(last.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get::<String, _>(0)?)).collect()
    }

    /// Manifests in the repository whose subject is `digest`, optionally of one artifact type.
    pub async fn referrers(&self, repo: i64, digest: &str, artifact_type: Option<&str>) -> Result<Vec<ManifestRow>> {
        let mut sql = format!("SELECT {MANIFEST_COLS} FROM manifests WHERE repository_id = ? AND subject = ?");
        if artifact_type.is_some() {
            sql.push_str(" AND artifact_type = ?");
        }
        sql.push_str(" ORDER BY digest");
        let sql = self.q(&sql);
        let mut q = sqlx::query(&sql).bind(repo).bind(digest);
        if let Some(t) = artifact_type {
            q = q.bind(t);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(manifest_row).collect()
    }
}

/// A repository with how many artifacts (manifests) it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct RepositoryRow {
    pub id: i64,
    pub name: String,
    pub created_at: i64,
    pub artifact_count: i64,
    pub updated_at: i64,
}

/// A tag and when it was last pointed.
#[derive(Clone, Debug, PartialEq)]
pub struct TagRow {
    pub name: String,
    pub digest: String,
    pub updated_at: i64,
}

impl Db {
    /// Repositories holding at least one manifest whose name starts with
    /// `prefix` and contains `filter`, by name, one page, and the total.
    pub async fn list_repositories(
        &self,
        prefix: &str,
        filter: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<RepositoryRow>, i64)> {
        let pattern = format!("{}%", like_escape(prefix));
        let contains = format!("%{}%", like_escape(filter.unwrap_or("")));
        let total: i64 = sqlx::query(&self.q(
            "SELECT COUNT(*) FROM repositories r WHERE r.name LIKE ? ESCAPE '!' AND r.name LIKE ? ESCAPE '!' \
             AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id)",
        ))
        .bind(&pattern)
        .bind(&contains)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        let rows = sqlx::query(&self.q("SELECT r.id, r.name, r.created_at, \
             (SELECT COUNT(*) FROM manifests m WHERE m.repository_id = r.id) AS artifact_count, \
             (SELECT MAX(m.pushed_at) FROM manifests m WHERE m.repository_id = r.id) AS updated_at \
             FROM repositories r WHERE r.name LIKE ? ESCAPE '!' AND r.name LIKE ? ESCAPE '!' \
             AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = r.id) ORDER BY r.name LIMIT ? OFFSET ?"))
        .bind(&pattern)
        .bind(&contains)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let list = rows
            .iter()
            .map(|r| {
                Ok(RepositoryRow {
                    id: r.try_get(0)?,
                    name: r.try_get(1)?,
                    created_at: r.try_get(2)?,
                    artifact_count: r.try_get(3)?,
                    updated_at: r.try_get::<Option<i64>, _>(4)?.unwrap_or(0),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((list, total))
    }

    /// Manifests of a repository, newest first, one page, and the total.
    pub async fn list_manifests(&self, repo: i64, offset: i64, limit: i64) -> Result<(Vec<ManifestRow>, i64)> {
        let total: i64 = sqlx::query(&self.q("SELECT COUNT(*) FROM manifests WHERE repository_id = ?"))
            .bind(repo)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let sql = format!(
            "SELECT {MANIFEST_COLS} FROM manifests WHERE repository_id = ? ORDER BY pushed_at DESC, digest LIMIT ? OFFSET ?"
        );
        let rows = sqlx::query(&self.q(&sql))
            .bind(repo)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        Ok((rows.iter().map(manifest_row).collect::<Result<_>>()?, total))
    }

    /// Tags pointing at one manifest.
    pub async fn manifest_tags(&self, repo: i64, digest: &str) -> Result<Vec<TagRow>> {
        let rows = sqlx::query(&self.q(
            "SELECT name, manifest_digest, updated_at FROM tags WHERE repository_id = ? AND manifest_digest = ? ORDER BY name",
        ))
        .bind(repo)
        .bind(digest)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TagRow {
                    name: r.try_get(0)?,
                    digest: r.try_get(1)?,
                    updated_at: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Points a tag at a manifest of the repository, creating or moving it.
    pub async fn set_tag(&self, repo: i64, tag: &str, digest: &str) -> Result<()> {
        let sql = self.dialect.upsert(
            "tags",
            "repository_id, name, manifest_digest, updated_at",
            "repository_id, name",
            &["manifest_digest", "updated_at"],
        );
        sqlx::query(&self.q(&sql))
            .bind(repo)
            .bind(tag)
            .bind(digest)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        self.changed();
        Ok(())
    }

    /// Removes every manifest, tag and blob link of a repository.
    pub async fn delete_repository_content(&self, repo: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        for sql in [
            "DELETE FROM tags WHERE repository_id = ?",
            "DELETE FROM manifest_references WHERE repository_id = ?",
            "DELETE FROM manifests WHERE repository_id = ?",
            "DELETE FROM repository_blobs WHERE repository_id = ?",
        ] {
            sqlx::query(&self.q(sql)).bind(repo).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.changed();
        Ok(())
    }
}
