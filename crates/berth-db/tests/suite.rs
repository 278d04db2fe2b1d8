//! The database suite: every check runs on SQLite, PostgreSQL and MySQL/MariaDB.

use berth_db::testing::{self, TestDb};
use berth_db::{Db, ManifestRecord, ManifestReference, ManifestRow};

/// As the registry puts a manifest: its own bytes' row first, then the manifest.
async fn put_manifest(db: &Db, repo: i64, m: &ManifestRecord) -> berth_db::Result<()> {
    db.touch_object(&m.row.digest, m.row.size).await?;
    db.put_manifest(repo, m).await
}

fn digest(n: u32) -> String {
    format!("sha256:{n:064x}")
}

fn row(d: &str, subject: Option<&str>, artifact_type: Option<&str>) -> ManifestRow {
    ManifestRow {
        digest: d.to_string(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        artifact_type: artifact_type.map(str::to_string),
        subject: subject.map(str::to_string),
        size: 123,
        annotations: Some(r#"{"a":"b"}"#.into()),
        pushed_at: 1000,
    }
}

async fn each(f: impl AsyncFn(&Db)) {
    let dbs: Vec<TestDb> = testing::all().await;
    for t in dbs {
        eprintln!("-- on {}", t.db.dialect().name());
        f(&t.db).await;
        t.drop_db().await;
    }
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let dbs = testing::all().await;
    for t in dbs {
        // A second connect (another replica starting) applies nothing twice.
        let again = Db::connect(&t.url).await.expect("second connect");
        again.close().await;
        t.drop_db().await;
    }
}

#[tokio::test]
async fn repositories_and_blobs() {
    each(async |db| {
        assert_eq!(db.repository_id("a/b").await.unwrap(), None);
        let id = db.ensure_repository("a/b").await.unwrap();
        assert_eq!(db.ensure_repository("a/b").await.unwrap(), id);
        assert_eq!(db.repository_id("a/b").await.unwrap(), Some(id));
        let other = db.ensure_repository("a/c").await.unwrap();

        assert_eq!(db.repository_blob(id, &digest(1)).await.unwrap(), None);
        db.link_blob(id, &digest(1), 42, None).await.unwrap();
        db.link_blob(id, &digest(1), 42, None).await.unwrap();
        assert_eq!(db.repository_blob(id, &digest(1)).await.unwrap(), Some(42));
        assert_eq!(
            db.repository_blob(other, &digest(1)).await.unwrap(),
            None,
            "links are per repository"
        );
        assert!(db.unlink_blob(id, &digest(1)).await.unwrap());
        assert!(!db.unlink_blob(id, &digest(1)).await.unwrap());
        assert_eq!(db.repository_blob(id, &digest(1)).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn uploads() {
    each(async |db| {
        let repo = db.ensure_repository("x").await.unwrap();
        db.create_upload("u1", repo).await.unwrap();
        let u = db.upload("u1").await.unwrap().unwrap();
        assert_eq!(u.repository, "x");
        assert!(db.upload("nope").await.unwrap().is_none());
        assert_eq!(
            db.stale_uploads(u.updated_at + 1).await.unwrap(),
            vec!["u1".to_string()]
        );
        assert!(db.stale_uploads(u.updated_at).await.unwrap().is_empty());
        // Finishing an upload links its blob and removes the session atomically.
        db.link_blob(repo, &digest(9), 5, Some("u1")).await.unwrap();
        assert!(db.upload("u1").await.unwrap().is_none());
        db.create_upload("u2", repo).await.unwrap();
        db.touch_upload("u2").await.unwrap();
        assert!(db.delete_upload("u2").await.unwrap());
        assert!(!db.delete_upload("u2").await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn manifests_tags_and_referrers() {
    each(async |db| {
        let repo = db.ensure_repository("lib/img").await.unwrap();
        db.link_blob(repo, &digest(1), 10, None).await.unwrap();
        let image = ManifestRecord {
            row: row(&digest(100), None, Some("application/vnd.oci.image.config.v1+json")),
            references: vec![ManifestReference {
                digest: digest(1),
                is_manifest: false,
            }],
            tag: Some("latest".into()),
        };
        put_manifest(db, repo, &image).await.unwrap();
        // The same manifest again, with another tag: one row, two tags.
        put_manifest(
            db,
            repo,
            &ManifestRecord {
                tag: Some("v1".into()),
                ..image.clone()
            },
        )
        .await
        .unwrap();
        assert_eq!(db.manifest(repo, &digest(100)).await.unwrap(), Some(image.row.clone()));
        assert_eq!(
            db.tagged_manifest(repo, "v1").await.unwrap().unwrap().digest,
            digest(100)
        );
        assert_eq!(db.blob_referrers(repo, &digest(1)).await.unwrap(), vec![digest(100)]);

        // Tags sort by bytes and page with `last`.
        for t in ["B", "a", "Z", "_x"] {
            put_manifest(
                db,
                repo,
                &ManifestRecord {
                    tag: Some(t.into()),
                    ..image.clone()
                },
            )
            .await
            .unwrap();
        }
        assert_eq!(
            db.tags(repo, None, 100).await.unwrap(),
            ["B", "Z", "_x", "a", "latest", "v1"]
        );
        assert_eq!(db.tags(repo, Some("Z"), 2).await.unwrap(), ["_x", "a"]);
        assert!(db.delete_tag(repo, "B").await.unwrap());
        assert!(!db.delete_tag(repo, "B").await.unwrap());

        // Retagging moves the tag.
        put_manifest(
            db,
            repo,
            &ManifestRecord {
                row: row(&digest(101), None, None),
                references: vec![],
                tag: Some("latest".into()),
            },
        )
        .await
        .unwrap();
        assert_eq!(
            db.tagged_manifest(repo, "latest").await.unwrap().unwrap().digest,
            digest(101)
        );
        // The pull path's one query: by name and tag, and by name and digest.
        let (id, m) = db.named_manifest("lib/img", "latest", false).await.unwrap().unwrap();
        assert_eq!((id, m.digest.as_str()), (repo, digest(101).as_str()));
        let (_, m) = db.named_manifest("lib/img", &digest(100), true).await.unwrap().unwrap();
        assert_eq!(m, image.row);
        assert!(db.named_manifest("lib/img", "nope", false).await.unwrap().is_none());
        assert!(db.named_manifest("lib/other", "latest", false).await.unwrap().is_none());
        assert!(db
            .named_manifest("lib/img", &digest(101), false)
            .await
            .unwrap()
            .is_none());

        // An index and its child.
        let index = ManifestRecord {
            row: ManifestRow {
                media_type: "application/vnd.oci.image.index.v1+json".into(),
                ..row(&digest(102), None, None)
            },
            references: vec![ManifestReference {
                digest: digest(100),
                is_manifest: true,
            }],
            tag: None,
        };
        // A child's bytes are a stored object too (the registry records each
        // manifest's before storing it); an index needs them.
        let orphan = ManifestRecord {
            references: vec![ManifestReference {
                digest: digest(999),
                is_manifest: true,
            }],
            ..index.clone()
        };
        assert!(matches!(
            put_manifest(db, repo, &orphan).await,
            Err(berth_db::DbError::Missing(d)) if d == digest(999)
        ));
        db.touch_object(&digest(100), 100).await.unwrap();
        put_manifest(db, repo, &index).await.unwrap();
        assert_eq!(
            db.manifest_parents(repo, &digest(100)).await.unwrap(),
            vec![digest(102)]
        );

        // Referrers, with and without the artifact type filter.
        for (n, t) in [(200, "application/x.sig"), (201, "application/x.sbom")] {
            put_manifest(
                db,
                repo,
                &ManifestRecord {
                    row: row(&digest(n), Some(&digest(100)), Some(t)),
                    references: vec![],
                    tag: None,
                },
            )
            .await
            .unwrap();
        }
        let all = db.referrers(repo, &digest(100), None).await.unwrap();
        assert_eq!(
            all.iter().map(|r| r.digest.clone()).collect::<Vec<_>>(),
            [digest(200), digest(201)]
        );
        let sigs = db
            .referrers(repo, &digest(100), Some("application/x.sig"))
            .await
            .unwrap();
        assert_eq!(sigs.len(), 1);
        assert_eq!(sigs[0].annotations.as_deref(), Some(r#"{"a":"b"}"#));

        // Deleting a manifest removes its tags and references.
        assert!(db.delete_manifest(repo, &digest(102)).await.unwrap());
        assert!(db.manifest_parents(repo, &digest(100)).await.unwrap().is_empty());
        assert!(db.delete_manifest(repo, &digest(100)).await.unwrap());
        assert!(!db.delete_manifest(repo, &digest(100)).await.unwrap());
        assert_eq!(db.tags(repo, None, 100).await.unwrap(), ["latest"]);
        assert!(db.blob_referrers(repo, &digest(1)).await.unwrap().is_empty());
    })
    .await;
}

#[tokio::test]
async fn catalog_lists_repositories_with_manifests() {
    each(async |db| {
        for name in ["b", "a/x", "c", "empty"] {
            let id = db.ensure_repository(name).await.unwrap();
            if name != "empty" {
                put_manifest(
                    db,
                    id,
                    &ManifestRecord {
                        row: row(&digest(1), None, None),
                        references: vec![],
                        tag: None,
                    },
                )
                .await
                .unwrap();
            }
        }
        assert_eq!(db.repositories(None, 10).await.unwrap(), ["a/x", "b", "c"]);
        assert_eq!(db.repositories(Some("a/x"), 1).await.unwrap(), ["b"]);
    })
    .await;
}

#[tokio::test]
async fn repository_listing_artifacts_and_tags() {
    each(async |db| {
        for name in ["proj/a", "proj/b_c", "projx/a", "proj/empty"] {
            let id = db.ensure_repository(name).await.unwrap();
            if name != "proj/empty" {
                put_manifest(
                    db,
                    id,
                    &ManifestRecord {
                        row: row(&digest(1), None, None),
                        references: vec![],
                        tag: Some("v1".into()),
                    },
                )
                .await
                .unwrap();
            }
        }
        let (list, total) = db.list_repositories("proj/", None, 0, 10).await.unwrap();
        assert_eq!(total, 2);
        assert_eq!(
            list.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
            ["proj/a", "proj/b_c"]
        );
        assert_eq!((list[0].artifact_count, list[0].updated_at), (1, 1000));
        // `_` in a filter is literal.
        let (list, total) = db.list_repositories("proj/", Some("_"), 0, 10).await.unwrap();
        assert_eq!((list.len(), total), (1, 1));
        assert_eq!(
            db.list_repositories("", None, 1, 1).await.unwrap().0[0].name,
            "proj/b_c"
        );

        let repo = db.repository_id("proj/a").await.unwrap().unwrap();
        db.set_tag(repo, "latest", &digest(1)).await.unwrap();
        let tags = db.manifest_tags(repo, &digest(1)).await.unwrap();
        assert_eq!(
            tags.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["latest", "v1"]
        );
        let (ms, total) = db.list_manifests(repo, 0, 10).await.unwrap();
        assert_eq!((ms.len(), total), (1, 1));
        db.delete_repository_content(repo).await.unwrap();
        assert_eq!(db.list_manifests(repo, 0, 10).await.unwrap().1, 0);
        assert_eq!(db.list_repositories("proj/", None, 0, 10).await.unwrap().1, 1);
    })
    .await;
}

#[tokio::test]
async fn project_storage_counts_shared_content_once() {
    each(async |db| {
        assert_eq!(db.project_storage("p").await.unwrap(), 0);
        let a = db.ensure_repository("p/a").await.unwrap();
        let b = db.ensure_repository("p/sub/b").await.unwrap();
        let other = db.ensure_repository("q/a").await.unwrap();
        // A layer shared by two repositories of p, one of p/a alone, one elsewhere.
        db.link_blob(a, &digest(1), 1000, None).await.unwrap();
        db.link_blob(b, &digest(1), 1000, None).await.unwrap();
        db.link_blob(a, &digest(2), 20, None).await.unwrap();
        db.link_blob(other, &digest(3), 5, None).await.unwrap();
        let m = ManifestRecord {
            row: ManifestRow {
                pushed_at: berth_db::now_ms(),
                ..row(&digest(100), None, None)
            },
            references: vec![ManifestReference {
                digest: digest(1),
                is_manifest: false,
            }],
            tag: Some("v1".into()),
        };
        put_manifest(db, a, &m).await.unwrap();
        put_manifest(db, b, &m).await.unwrap();
        // 1000 + 20 + one manifest of 123 bytes.
        assert_eq!(db.project_storage("p").await.unwrap(), 1143);
        assert_eq!(db.project_storage("q").await.unwrap(), 5);
        // LIKE wildcards in a name match only themselves.
        assert_eq!(db.project_storage("_").await.unwrap(), 0);

        // An artifact's size: its manifest and what it references; an
        // index adds its children, each blob counted once.
        assert_eq!(db.artifact_size(a, &digest(100)).await.unwrap(), 123 + 1000);
        let child2 = ManifestRecord {
            row: row(&digest(101), None, None),
            references: vec![
                ManifestReference {
                    digest: digest(1),
                    is_manifest: false,
                },
                ManifestReference {
                    digest: digest(2),
                    is_manifest: false,
                },
            ],
            tag: None,
        };
        put_manifest(db, a, &child2).await.unwrap();
        let index = ManifestRecord {
            row: row(&digest(102), None, None),
            references: [100, 101]
                .map(|n| ManifestReference {
                    digest: digest(n),
                    is_manifest: true,
                })
                .to_vec(),
            tag: Some("multi".into()),
        };
        for n in [100, 101] {
            db.touch_object(&digest(n), 123).await.unwrap();
        }
        put_manifest(db, a, &index).await.unwrap();
        assert_eq!(db.artifact_size(a, &digest(102)).await.unwrap(), 3 * 123 + 1000 + 20);
    })
    .await;
}

#[tokio::test]
async fn pull_times_are_kept_to_the_minute() {
    each(async |db| {
        let repo = db.ensure_repository("p/pulled").await.unwrap();
        put_manifest(
            db,
            repo,
            &ManifestRecord {
                row: row(&digest(7), None, None),
                references: vec![],
                tag: Some("v1".into()),
            },
        )
        .await
        .unwrap();
        assert_eq!(db.pulled_at(repo, &digest(7)).await.unwrap(), None);
        db.record_pull(repo, &digest(7), 1_000_000, 60_000).await.unwrap();
        assert_eq!(db.pulled_at(repo, &digest(7)).await.unwrap(), Some(1_000_000));
        // Within the minute: no write.
        db.record_pull(repo, &digest(7), 1_030_000, 60_000).await.unwrap();
        assert_eq!(db.pulled_at(repo, &digest(7)).await.unwrap(), Some(1_000_000));
        db.record_pull(repo, &digest(7), 1_070_000, 60_000).await.unwrap();
        assert_eq!(db.pulled_at(repo, &digest(7)).await.unwrap(), Some(1_070_000));
    })
    .await;
}

#[tokio::test]
async fn garbage_collection_takes_only_what_nothing_needs() {
    each(async |db| {
        let future = berth_db::now_ms() + 60_000;
        let past = berth_db::now_ms() - 60_000;
        let repo = db.ensure_repository("lib/gc").await.unwrap();
        for n in [1, 2] {
            db.link_blob(repo, &digest(n), 10 * n as i64, None).await.unwrap();
        }
        // Manifest 100 (untagged) references blob 1; blob 2 is referenced by nothing.
        db.touch_object(&digest(100), 123).await.unwrap();
        let m = ManifestRecord {
            row: ManifestRow {
                pushed_at: berth_db::now_ms(),
                ..row(&digest(100), None, None)
            },
            references: vec![ManifestReference {
                digest: digest(1),
                is_manifest: false,
            }],
            tag: None,
        };
        put_manifest(db, repo, &m).await.unwrap();

        let found = db.unreferenced_objects(future, "", 100).await.unwrap();
        assert_eq!(found.iter().map(|u| u.digest.clone()).collect::<Vec<_>>(), [digest(2)]);
        assert_eq!(found[0].size, 20);
        assert!(
            db.unreferenced_objects(past, "", 100).await.unwrap().is_empty(),
            "nothing old enough"
        );

        // Touched within the window, or referenced: kept, and the bytes are not asked to go.
        let mut called = false;
        assert!(!db
            .delete_object_if_unused(&digest(2), past, async || {
                called = true;
                Ok(())
            })
            .await
            .unwrap());
        assert!(!db
            .delete_object_if_unused(&digest(1), future, async || {
                called = true;
                Ok(())
            })
            .await
            .unwrap());
        assert!(!called);
        // Removing the bytes fails: the row stays.
        assert!(db
            .delete_object_if_unused(&digest(2), future, async || Err("disk on fire".to_string()))
            .await
            .is_err());
        assert!(db.object_exists(&digest(2)).await.unwrap());
        // Unreferenced and old: row, repository link and bytes go together.
        assert!(db
            .delete_object_if_unused(&digest(2), future, async || {
                called = true;
                Ok(())
            })
            .await
            .unwrap());
        assert!(called);
        assert!(!db.object_exists(&digest(2)).await.unwrap());
        assert_eq!(db.repository_blob(repo, &digest(2)).await.unwrap(), None);

        // What depended on the collected blob now fails instead of pointing at nothing.
        let other = db.ensure_repository("lib/other").await.unwrap();
        assert_eq!(db.link_existing_blob(other, &digest(2)).await.unwrap(), None);
        assert_eq!(db.link_existing_blob(other, &digest(1)).await.unwrap(), Some(10));
        let needs_2 = ManifestRecord {
            row: row(&digest(101), None, None),
            references: vec![ManifestReference {
                digest: digest(2),
                is_manifest: false,
            }],
            tag: Some("t".into()),
        };
        assert!(matches!(
            put_manifest(db, repo, &needs_2).await,
            Err(berth_db::DbError::Missing(_))
        ));
        assert!(
            db.tagged_manifest(repo, "t").await.unwrap().is_none(),
            "nothing of it was kept"
        );

        // Untagged manifests: found, removed only while still untagged.
        let untagged = db.untagged_manifests(future, 10).await.unwrap();
        assert_eq!(untagged.len(), 1);
        assert_eq!(
            (untagged[0].repository.as_str(), untagged[0].digest.as_str()),
            ("lib/gc", digest(100).as_str())
        );
        assert!(db.untagged_manifests(past, 10).await.unwrap().is_empty(), "too young");
        db.set_tag(repo, "now-tagged", &digest(100)).await.unwrap();
        assert!(!db
            .delete_manifest_if_untagged(repo, &digest(100), future)
            .await
            .unwrap());
        assert!(db.delete_tag(repo, "now-tagged").await.unwrap());
        assert!(db
            .delete_manifest_if_untagged(repo, &digest(100), future)
            .await
            .unwrap());
        assert!(db.manifest(repo, &digest(100)).await.unwrap().is_none());
        // Its bytes and its blob are garbage now (blob 1 is still linked to lib/other, but
        // nothing references it).
        let found: Vec<String> = db
            .unreferenced_objects(future, "", 100)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.digest)
            .collect();
        // (101's row came from the put that was refused: an orphan, collectable.)
        assert_eq!(found, [digest(1), digest(100), digest(101)]);
        // Paging by digest.
        let page: Vec<String> = db
            .unreferenced_objects(future, &digest(1), 100)
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.digest)
            .collect();
        assert_eq!(page, [digest(100), digest(101)]);
    })
    .await;
}

#[tokio::test]
async fn jobs_are_claimed_once_retried_and_logged() {
    each(async |db| {
        let (id, new) = db.enqueue_job("gc", "{}", Some("gc"), "admin", 2).await.unwrap();
        assert!(new);
        let (again, new) = db.enqueue_job("gc", "{}", Some("gc"), "admin", 2).await.unwrap();
        assert_eq!((again, new), (id, false), "one pending job per key");
        let (other, _) = db.enqueue_job("gc", "{}", None, "admin", 1).await.unwrap();
        assert_ne!(other, id);

        // One claimant wins each job.
        let a = db.claim_job(&["gc"], "a", 60_000).await.unwrap().unwrap();
        let b = db.claim_job(&["gc"], "b", 60_000).await.unwrap().unwrap();
        assert_eq!((a.id, b.id), (id, other));
        assert!(db.claim_job(&["gc"], "c", 60_000).await.unwrap().is_none());
        assert_eq!(a.status, berth_db::RUNNING);
        assert_eq!(a.attempts, 1);
        assert!(db
            .job_heartbeat(a.id, "a", 60_000, Some(r#"{"done":1}"#))
            .await
            .unwrap());
        assert!(!db.job_heartbeat(a.id, "b", 60_000, None).await.unwrap(), "not b's");
        db.job_log(a.id, "first line").await.unwrap();
        db.job_log(a.id, "second line").await.unwrap();

        // A failure with attempts left goes back to pending; the key stays taken.
        db.finish_job(a.id, "a", Err("disk full"), 0).await.unwrap();
        let j = db.job(a.id).await.unwrap().unwrap();
        assert_eq!(
            (j.status.as_str(), j.error.as_deref()),
            (berth_db::PENDING, Some("disk full"))
        );
        assert_eq!(
            db.enqueue_job("gc", "{}", Some("gc"), "admin", 2).await.unwrap(),
            (id, false)
        );
        let a2 = db.claim_job(&["gc"], "a", 60_000).await.unwrap().unwrap();
        assert_eq!((a2.id, a2.attempts), (id, 2));
        db.finish_job(id, "a", Ok(r#"{"done":2}"#), 0).await.unwrap();
        let j = db.job(id).await.unwrap().unwrap();
        assert_eq!(j.status, berth_db::SUCCEEDED);
        assert_eq!(j.progress.as_deref(), Some(r#"{"done":2}"#));
        assert_eq!(j.log, "first line\nsecond line\n");
        assert!(j.finished_at.is_some());
        // Finished: the key is free again.
        let (third, new) = db.enqueue_job("gc", "{}", Some("gc"), "admin", 2).await.unwrap();
        assert!(new && third != id);

        // Out of attempts: failed for good.
        db.finish_job(other, "b", Err("boom"), 0).await.unwrap();
        assert_eq!(db.job(other).await.unwrap().unwrap().status, berth_db::FAILED);

        // Retries back off: each waits twice as long as the one before.
        let (r, _) = db.enqueue_job("retry", "{}", None, "admin", 4).await.unwrap();
        let mut waits = Vec::new();
        for _ in 0..3 {
            assert!(db.run_job_now(r).await.unwrap());
            let j = db.claim_job(&["retry"], "r", 60_000).await.unwrap().unwrap();
            db.finish_job(j.id, "r", Err("flaky"), 1_000).await.unwrap();
            let after = db.job(r).await.unwrap().unwrap();
            waits.push((after.run_at - berth_db::now_ms() + 500) / 1000);
        }
        assert_eq!(waits, [1, 2, 4], "retry waits in seconds");
        assert!(
            db.claim_job(&["retry"], "r", 60_000).await.unwrap().is_none(),
            "not due yet"
        );

        // A runner that died: its lease runs out and another claims the job.
        let c = db.claim_job(&["gc"], "c", -1).await.unwrap().unwrap();
        assert_eq!(c.id, third);
        let d = db.claim_job(&["gc"], "d", 60_000).await.unwrap().unwrap();
        assert_eq!((d.id, d.attempts), (third, 2));
        assert!(!db.job_heartbeat(third, "c", 60_000, None).await.unwrap(), "c lost it");

        let (list, total) = db.jobs("gc", 0, 10).await.unwrap();
        assert_eq!(total, 3);
        assert_eq!(list.iter().map(|j| j.id).collect::<Vec<_>>(), [third, other, id]);
    })
    .await;
}

#[tokio::test]
async fn registries_policies_and_replication_tasks() {
    use berth_db::{DbError, PolicyRow, RegistryRow, TaskCounts};
    each(async |db| {
        let reg = RegistryRow {
            id: 0,
            name: "remote".into(),
            kind: "harbor".into(),
            url: "https://r.example".into(),
            description: "d".into(),
            access_key: "robot".into(),
            access_secret: Some("v1:sealed".into()),
            insecure: true,
            ca_cert: None,
            created_at: 0,
            updated_at: 0,
        };
        let id = db.create_registry(&reg).await.unwrap();
        let got = db.registry(id).await.unwrap().unwrap();
        assert_eq!(
            (got.name.as_str(), got.insecure, got.access_secret.as_deref()),
            ("remote", true, Some("v1:sealed"))
        );
        assert!(
            matches!(db.create_registry(&reg).await, Err(DbError::Conflict(_))),
            "a taken name"
        );
        let policy = PolicyRow {
            id: 0,
            name: "p".into(),
            src_registry_id: None,
            dest_registry_id: Some(id),
            enabled: true,
            spec: "{}".into(),
            created_at: 0,
            updated_at: 0,
        };
        let pid = db.create_policy(&policy).await.unwrap();
        assert!(matches!(db.create_policy(&policy).await, Err(DbError::Conflict(_))));
        assert!(
            matches!(db.delete_registry(id).await, Err(DbError::Conflict(_))),
            "a registry a policy uses stays"
        );
        let mut changed = db.policy(pid).await.unwrap().unwrap();
        changed.enabled = false;
        assert!(db.update_policy(&changed).await.unwrap());
        assert!(!db.policy(pid).await.unwrap().unwrap().enabled);

        // Tasks of a run: started, started again after a takeover, finished.
        let (job, _) = db.enqueue_job("replication", "{}", None, "manual", 3).await.unwrap();
        let t = db.start_task(job, "copy", "a/b:v1", "m/b:v1").await.unwrap();
        assert_eq!((t.attempts, t.status.as_str()), (1, berth_db::TASK_RUNNING));
        let again = db.start_task(job, "copy", "a/b:v1", "m/b:v1").await.unwrap();
        assert_eq!((again.id, again.attempts), (t.id, 2));
        db.task_log(t.id, "line one").await.unwrap();
        db.finish_task(t.id, berth_db::TASK_SUCCEEDED, Some(&digest(7)), 10, "copied")
            .await
            .unwrap();
        let t2 = db.start_task(job, "copy", "a/b:v2", "m/b:v2").await.unwrap();
        db.finish_task(t2.id, berth_db::TASK_FAILED, None, 0, "remote said no")
            .await
            .unwrap();
        db.start_task(job, "deletion", "a/b:v1", "m/b:v1").await.unwrap();
        assert_eq!(
            db.task_counts(job).await.unwrap(),
            TaskCounts {
                total: 3,
                succeeded: 1,
                failed: 1,
                running: 1,
                skipped: 0
            }
        );
        let done = db.task(job, t.id).await.unwrap().unwrap();
        assert_eq!(done.digest, Some(digest(7)));
        assert_eq!(done.log, "line one\n");
        assert_eq!(db.tasks(job).await.unwrap().len(), 3);

        // Stopping: a running job's heartbeat fails, and finishing it changes nothing.
        let claimed = db.claim_job(&["replication"], "me", 30_000).await.unwrap().unwrap();
        assert_eq!(claimed.id, job);
        assert!(db.stop_job(job).await.unwrap());
        assert!(!db.stop_job(job).await.unwrap(), "stopped once");
        assert!(!db.job_heartbeat(job, "me", 30_000, None).await.unwrap());
        db.finish_job(job, "me", Ok("{}"), 1000).await.unwrap();
        assert_eq!(db.job(job).await.unwrap().unwrap().status, berth_db::STOPPED);

        assert!(db.delete_policy(pid).await.unwrap());
        // A proxy cache project keeps its registry too.
        let owner = db
            .create_user(&berth_db::UserRow {
                id: 0,
                username: "proxyowner".into(),
                email: String::new(),
                realname: String::new(),
                comment: String::new(),
                password_hash: String::new(),
                sysadmin: false,
                created_at: 0,
                updated_at: 0,
            })
            .await
            .unwrap();
        let project = db.create_project("hub", true, owner, 1).await.unwrap().unwrap();
        assert_eq!(db.project_by_id(project).await.unwrap().unwrap().registry_id, None);
        assert!(db.set_project_registry(project, Some(id)).await.unwrap());
        assert_eq!(db.project_by_name("hub").await.unwrap().unwrap().registry_id, Some(id));
        assert!(
            matches!(db.delete_registry(id).await, Err(DbError::Conflict(m)) if m.contains("proxy cache")),
            "a registry a proxy cache project uses stays"
        );
        assert!(db.delete_project(project).await.unwrap());
        assert!(db.delete_registry(id).await.unwrap());
        assert!(db.registries().await.unwrap().is_empty());
    })
    .await;
}
