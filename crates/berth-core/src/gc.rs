//! Online garbage collection: run while replicas push, pull and delete.
//!
//! 1. Blobs a collection left in the trash when it was interrupted go back
//!    if their row is there, and are deleted if it is not.
//! 2. Optionally, manifests that no tag and no other manifest holds, older
//!    than the window, are deleted (only while that is still true).
//! 3. Stored objects that nothing references and nobody touched within the
//!    window are removed: the row goes in a transaction that moves the bytes
//!    to the trash before it commits; the trash is emptied after.
//! 4. Uploads abandoned for longer than the upload expiry are removed.
//!
//! The rules that make step 3 safe are in `berth_db`'s gc module. The cost
//! is the metadata read (one indexed query per page of candidates) plus one
//! transaction and one storage removal per object removed; stored bytes are
//! never walked.

use std::time::Duration;

use berth_db::now_ms;
use berth_oci::Digest;
use serde::Serialize;

use crate::registry::Registry;
use crate::{Error, Result};

/// Candidates read per query.
const PAGE: i64 = 500;

/// One collection at a time across replicas and `berth gc`: two would take
/// each other's trash for leftovers. The lease is renewed after every page.
const LEASE: &str = "garbage-collection";
const LEASE_MS: i64 = 120_000;

#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Nothing touched (pushed, or depended on by a push) more recently than
    /// this is removed. It must exceed the longest time between a client's
    /// check that a blob exists and the manifest put that uses it.
    pub min_age: Duration,
    /// Also delete untagged manifests older than `min_age`.
    pub untagged: bool,
    /// Report what would go; change nothing.
    pub dry_run: bool,
    /// Uploads not written to for this long are removed.
    pub upload_max_age: Duration,
}

/// What a run did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct GcReport {
    pub dry_run: bool,
    pub phase: String,
    pub manifests_deleted: u64,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    /// Candidates that a push touched or referenced before they could go.
    pub kept_in_use: u64,
    pub trash_restored: u64,
    pub trash_purged: u64,
    pub uploads_purged: u64,
}

fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// One line saying what a run did (or would do).
pub fn summary(r: &GcReport) -> String {
    let verb = if r.dry_run { "would remove" } else { "removed" };
    let mut s = format!(
        "{verb} {} manifests and {} blobs, {} ({} bytes)",
        r.manifests_deleted,
        r.blobs_deleted,
        human(r.bytes_freed),
        r.bytes_freed
    );
    if !r.dry_run {
        s.push_str(&format!(
            "; kept {} that pushes touched meanwhile; {} abandoned uploads removed",
            r.kept_in_use, r.uploads_purged
        ));
        if r.trash_restored + r.trash_purged > 0 {
            s.push_str(&format!(
                "; an interrupted run's trash: {} restored, {} removed",
                r.trash_restored, r.trash_purged
            ));
        }
    }
    s
}

fn storage(context: &str, e: berth_storage::StorageError) -> Error {
    Error::internal(context, e)
}

impl Registry {
    /// Runs one collection. `progress` is called after each page of work.
    pub async fn collect_garbage(
        &self,
        o: &GcOptions,
        progress: &(dyn Fn(&GcReport) + Send + Sync),
    ) -> Result<GcReport> {
        let holder = format!("gc-{}", uuid::Uuid::new_v4().simple());
        if !o.dry_run && !self.db().try_lease(LEASE, &holder, LEASE_MS).await? {
            return Err(Error::new(
                crate::ErrorCode::Unavailable,
                "another garbage collection is running; try again when it ends",
            ));
        }
        let r = self.collect(o, progress, &holder).await;
        if !o.dry_run {
            // Give the lease up at once rather than letting it run out.
            let _ = self.db().try_lease(LEASE, &holder, -1).await;
        }
        r
    }

    async fn collect(
        &self,
        o: &GcOptions,
        progress: &(dyn Fn(&GcReport) + Send + Sync),
        holder: &str,
    ) -> Result<GcReport> {
        let renew = async || -> Result<()> {
            if !o.dry_run && !self.db().try_lease(LEASE, holder, LEASE_MS).await? {
                return Err(Error::internal("garbage collection", "lost its lease to another run"));
            }
            Ok(())
        };
        let mut r = GcReport {
            dry_run: o.dry_run,
            ..GcReport::default()
        };
        let cutoff = now_ms() - o.min_age.as_millis() as i64;

        r.phase = "trash".into();
        if !o.dry_run {
            self.recover_trash(&mut r).await?;
        }
        progress(&r);

        if o.untagged {
            r.phase = "manifests".into();
            if o.dry_run {
                for m in self.db().untagged_manifests(cutoff, i64::MAX).await? {
                    r.manifests_deleted += 1;
                    r.bytes_freed += m.size as u64;
                }
            } else {
                loop {
                    let page = self.db().untagged_manifests(cutoff, PAGE).await?;
                    let mut deleted = 0;
                    for m in &page {
                        if self
                            .db()
                            .delete_manifest_if_untagged(m.repository_id, &m.digest, cutoff)
                            .await?
                        {
                            deleted += 1;
                        } else {
                            r.kept_in_use += 1;
                        }
                    }
                    r.manifests_deleted += deleted;
                    progress(&r);
                    renew().await?;
                    if deleted == 0 {
                        break;
                    }
                }
            }
            progress(&r);
        }

        r.phase = "blobs".into();
        let mut after = String::new();
        loop {
            let page = self.db().unreferenced_objects(cutoff, &after, PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.digest.clone();
            for obj in page {
                if o.dry_run {
                    r.blobs_deleted += 1;
                    r.bytes_freed += obj.size as u64;
                    continue;
                }
                let Ok(digest) = obj.digest.parse::<Digest>() else {
                    tracing::warn!(digest = %obj.digest, "a stored object with an unreadable digest is left alone");
                    continue;
                };
                let store = self.store().clone();
                let moved = digest.clone();
                let removed = match self
                    .db()
                    .delete_object_if_unused(&obj.digest, cutoff, async move || {
                        store.trash(&moved).await.map(|_| ()).map_err(|e| e.to_string())
                    })
                    .await
                {
                    Ok(removed) => removed,
                    Err(e) => {
                        // The bytes may be in the trash while the deletion did
                        // not commit: put them back before giving up.
                        if self.db().object_exists(&obj.digest).await.unwrap_or(true) {
                            let _ = self.store().restore(&digest).await;
                        }
                        return Err(e.into());
                    }
                };
                if removed {
                    // Committed: the bytes can go for good. If this fails they
                    // stay in the trash, and the next run deletes them.
                    if let Err(e) = self.store().purge(&digest).await {
                        tracing::warn!(%digest, error = %e, "emptying the trash failed; the next run retries");
                    }
                    r.blobs_deleted += 1;
                    r.bytes_freed += obj.size as u64;
                } else {
                    r.kept_in_use += 1;
                }
            }
            progress(&r);
            renew().await?;
        }

        r.phase = "uploads".into();
        if !o.dry_run {
            r.uploads_purged = self.purge_uploads(o.upload_max_age).await? as u64;
        }
        r.phase = "done".into();
        progress(&r);
        Ok(r)
    }

    /// Undoes or finishes what an interrupted run left in the trash.
    async fn recover_trash(&self, r: &mut GcReport) -> Result<()> {
        let trashed = self
            .store()
            .trashed()
            .await
            .map_err(|e| storage("listing the trash", e))?;
        for d in trashed {
            if self.db().object_exists(&d.to_string()).await? {
                self.store()
                    .restore(&d)
                    .await
                    .map_err(|e| storage("restoring from the trash", e))?;
                r.trash_restored += 1;
            } else {
                self.store()
                    .purge(&d)
                    .await
                    .map_err(|e| storage("emptying the trash", e))?;
                r.trash_purged += 1;
            }
        }
        Ok(())
    }

    /// Puts back what an interrupted collection left in the trash while its
    /// row survives; run at start, before serving.
    /// Skipped while another replica collects (its trash is in use).
    pub async fn recover_interrupted_gc(&self) -> Result<GcReport> {
        let mut r = GcReport::default();
        let holder = format!("gc-{}", uuid::Uuid::new_v4().simple());
        if self.db().try_lease(LEASE, &holder, LEASE_MS).await? {
            let done = self.recover_trash(&mut r).await;
            let _ = self.db().try_lease(LEASE, &holder, -1).await;
            done?;
        }
        Ok(r)
    }
}
