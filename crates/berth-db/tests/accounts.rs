//! Accounts, projects, robots, audit log and settings on every database.

use berth_db::testing;
use berth_db::{AuditFilter, AuditRow, Db, ManifestRecord, RobotRow, UserRow};

/// As the registry puts a manifest: its own bytes' row first, then the manifest.
async fn put_manifest(db: &Db, repo: i64, m: &ManifestRecord) -> berth_db::Result<()> {
    db.touch_object(&m.row.digest, m.row.size).await?;
    db.put_manifest(repo, m).await
}

fn user(name: &str, admin: bool) -> UserRow {
    UserRow {
        id: 0,
        username: name.into(),
        email: format!("{name}@example.test"),
        realname: name.to_uppercase(),
        comment: String::new(),
        password_hash: "$argon2id$fake".into(),
        sysadmin: admin,
        created_at: 0,
        updated_at: 0,
    }
}

async fn each(f: impl AsyncFn(&Db)) {
    for t in testing::all().await {
        eprintln!("-- on {}", t.db.dialect().name());
        f(&t.db).await;
        t.drop_db().await;
    }
}

#[tokio::test]
async fn users() {
    each(async |db| {
        let a = db.create_user(&user("alice", false)).await.unwrap();
        let b = db.create_user(&user("bob_1", true)).await.unwrap();
        assert!(
            db.create_user(&user("alice", false)).await.is_err(),
            "usernames are unique"
        );
        let got = db.user_by_name("alice").await.unwrap().unwrap();
        assert_eq!(
            (got.id, got.email.as_str(), got.sysadmin),
            (a, "alice@example.test", false)
        );
        assert_eq!(db.user_by_id(b).await.unwrap().unwrap().username, "bob_1");
        let (page, total) = db.list_users(None, 0, 10).await.unwrap();
        assert_eq!((page.len(), total), (2, 2));
        // LIKE wildcards in the filter are literal.
        let (page, total) = db.list_users(Some("_"), 0, 10).await.unwrap();
        assert_eq!((page.len(), total), (1, 1));
        assert_eq!(db.list_users(None, 1, 10).await.unwrap().0[0].username, "bob_1");
        assert!(db.update_user_profile(a, "new@x", "Alice A", "c").await.unwrap());
        assert!(db.set_password_hash(a, "h2").await.unwrap());
        assert!(db.set_sysadmin(a, true).await.unwrap());
        let got = db.user_by_id(a).await.unwrap().unwrap();
        assert_eq!(
            (got.email.as_str(), got.password_hash.as_str(), got.sysadmin),
            ("new@x", "h2", true)
        );
        assert!(db.delete_user(a).await.unwrap());
        assert!(db.user_by_id(a).await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn projects_and_members() {
    each(async |db| {
        let owner = db.create_user(&user("owner", false)).await.unwrap();
        let dev = db.create_user(&user("dev", false)).await.unwrap();
        let p = db.create_project("team", false, owner, 1).await.unwrap().unwrap();
        assert!(db.create_project("team", true, owner, 1).await.unwrap().is_none());
        let pub_id = db.create_project("library", true, owner, 1).await.unwrap().unwrap();
        assert_eq!(db.member_role(p, owner).await.unwrap(), Some(1));
        assert_eq!(db.member_role(p, dev).await.unwrap(), None);
        db.set_member(p, dev, 2).await.unwrap();
        db.set_member(p, dev, 4).await.unwrap();
        assert_eq!(db.member_role(p, dev).await.unwrap(), Some(4));
        let ms = db.members(p).await.unwrap();
        assert_eq!(
            ms.iter().map(|m| (m.username.as_str(), m.role)).collect::<Vec<_>>(),
            [("dev", 4), ("owner", 1)]
        );
        // Visibility: a stranger sees public projects only.
        let stranger = db.create_user(&user("stranger", false)).await.unwrap();
        let (seen, total) = db.list_projects(None, None, Some(stranger), 0, 10).await.unwrap();
        assert_eq!(
            (seen.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), total),
            (vec!["library"], 1)
        );
        let (seen, _) = db.list_projects(None, None, Some(dev), 0, 10).await.unwrap();
        assert_eq!(seen.len(), 2);
        let (seen, _) = db.list_projects(Some("tea"), Some(false), None, 0, 10).await.unwrap();
        assert_eq!(seen[0].id, p);
        assert!(db.set_project_public(p, true).await.unwrap());
        assert!(db.project_by_id(p).await.unwrap().unwrap().public);
        // Repositories counted per project.
        let repo = db.ensure_repository("team/app").await.unwrap();
        db.ensure_repository("teammate/app").await.unwrap();
        put_manifest(
            db,
            repo,
            &berth_db::ManifestRecord {
                row: berth_db::ManifestRow {
                    digest: format!("sha256:{:064x}", 1),
                    media_type: "m".into(),
                    artifact_type: None,
                    subject: None,
                    size: 1,
                    annotations: None,
                    pushed_at: 0,
                },
                references: vec![],
                tag: None,
            },
        )
        .await
        .unwrap();
        assert_eq!(db.project_repository_count("team").await.unwrap(), 1);
        assert!(db.remove_member(p, dev).await.unwrap());
        assert!(db.delete_project(p).await.unwrap());
        assert!(db.project_by_name("team").await.unwrap().is_none());
        assert_eq!(db.project_by_id(pub_id).await.unwrap().unwrap().name, "library");
    })
    .await;
}

#[tokio::test]
async fn robots() {
    each(async |db| {
        let r = RobotRow {
            id: 0,
            name: "robot$lib+ci".into(),
            description: "ci".into(),
            secret_hash: "h".into(),
            level: "project".into(),
            project_id: Some(7),
            permissions: "[]".into(),
            expires_at: -1,
            disabled: false,
            created_at: 0,
            updated_at: 0,
        };
        let id = db.create_robot(&r).await.unwrap().unwrap();
        assert!(db.create_robot(&r).await.unwrap().is_none());
        let mut got = db.robot_by_name("robot$lib+ci").await.unwrap().unwrap();
        assert_eq!((got.id, got.project_id, got.expires_at), (id, Some(7), -1));
        got.secret_hash = "h2".into();
        got.disabled = true;
        assert!(db.update_robot(&got).await.unwrap());
        let again = db.robot_by_id(id).await.unwrap().unwrap();
        assert_eq!((again.secret_hash.as_str(), again.disabled), ("h2", true));
        assert_eq!(db.list_robots(Some(7)).await.unwrap().len(), 1);
        assert_eq!(db.list_robots(Some(8)).await.unwrap().len(), 0);
        assert!(db.delete_robot(id).await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn audit_and_settings() {
    each(async |db| {
        for (i, (user, op, res)) in [
            ("a", "create", "lib/x:v1"),
            ("b", "delete", "lib/x:v1"),
            ("a", "login", "user/a"),
        ]
        .iter()
        .enumerate()
        {
            db.add_audit(&AuditRow {
                id: 0,
                op_time: 1000 + i as i64,
                username: user.to_string(),
                operation: op.to_string(),
                resource_type: "artifact".into(),
                resource: res.to_string(),
                success: true,
                detail: String::new(),
            })
            .await
            .unwrap();
        }
        let (rows, total) = db.list_audit(&AuditFilter::default(), 0, 10).await.unwrap();
        assert_eq!(total, 3);
        assert_eq!(rows[0].operation, "login", "newest first");
        let f = AuditFilter {
            username: Some("a".into()),
            ..Default::default()
        };
        assert_eq!(db.list_audit(&f, 0, 10).await.unwrap().1, 2);
        let f = AuditFilter {
            resource_prefix: Some("lib/".into()),
            from_ms: Some(1001),
            ..Default::default()
        };
        let (rows, total) = db.list_audit(&f, 0, 10).await.unwrap();
        assert_eq!((total, rows[0].username.as_str()), (1, "b"));

        assert_eq!(db.setting("k").await.unwrap(), None);
        assert_eq!(db.setting_or_insert("k", "first").await.unwrap(), "first");
        assert_eq!(db.setting_or_insert("k", "second").await.unwrap(), "first");
        db.set_setting("k", "third").await.unwrap();
        assert_eq!(db.setting("k").await.unwrap().as_deref(), Some("third"));
    })
    .await;
}

#[tokio::test]
async fn sessions() {
    each(async |db| {
        let now = berth_db::now_ms();
        db.create_session("h1", 7, "csrf-1", now + 60_000).await.unwrap();
        db.create_session("h2", 7, "csrf-2", now - 1).await.unwrap();
        let s = db.session("h1").await.unwrap().unwrap();
        assert_eq!((s.user_id, s.csrf.as_str()), (7, "csrf-1"));
        assert!(
            db.session("h2").await.unwrap().is_none(),
            "expired sessions are not returned"
        );
        assert_eq!(db.purge_sessions().await.unwrap(), 1);
        assert!(db.delete_session("h1").await.unwrap());
        assert!(db.session("h1").await.unwrap().is_none());
    })
    .await;
}

#[tokio::test]
async fn vanity_paths() {
    each(async |db| {
        let v = berth_db::VanityRow {
            id: 0,
            project_id: 3,
            path: "/hello".into(),
            repo: "https://git.example.test/hello.git".into(),
            vcs: "git".into(),
            display: String::new(),
            subdirectory: "sub".into(),
        };
        let id = db.create_vanity(&v).await.unwrap().unwrap();
        assert!(db.create_vanity(&v).await.unwrap().is_none(), "paths are unique");
        db.create_vanity(&berth_db::VanityRow {
            path: "/other".into(),
            project_id: 4,
            ..v.clone()
        })
        .await
        .unwrap();
        let mine = db.vanity_paths(Some(3)).await.unwrap();
        assert_eq!(mine.len(), 1);
        assert_eq!((mine[0].id, mine[0].subdirectory.as_str()), (id, "sub"));
        assert_eq!(db.vanity_paths(None).await.unwrap().len(), 2);
        assert!(
            !db.delete_vanity(4, id).await.unwrap(),
            "only its own project deletes it"
        );
        assert!(db.delete_vanity(3, id).await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn leases_go_to_one_holder_until_they_run_out() {
    each(async |db| {
        assert!(db.try_lease("purge", "replica-a", 300).await.unwrap());
        assert!(!db.try_lease("purge", "replica-b", 300).await.unwrap(), "held by a");
        assert!(db.try_lease("purge", "replica-a", 300).await.unwrap(), "a renews");
        assert!(
            db.try_lease("other-job", "replica-b", 300).await.unwrap(),
            "leases are per job"
        );
        tokio::time::sleep(std::time::Duration::from_millis(350)).await;
        assert!(
            db.try_lease("purge", "replica-b", 300).await.unwrap(),
            "b takes over an expired lease"
        );
        assert!(!db.try_lease("purge", "replica-a", 300).await.unwrap());
    })
    .await;
}

fn manifest(d: &str, pushed_at: i64, tag: Option<&str>, blob: &str) -> ManifestRecord {
    ManifestRecord {
        row: berth_db::ManifestRow {
            digest: d.into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            artifact_type: None,
            subject: None,
            size: 100,
            annotations: None,
            pushed_at,
        },
        references: vec![berth_db::ManifestReference {
            digest: blob.into(),
            is_manifest: false,
        }],
        tag: tag.map(str::to_string),
    }
}

/// Immutability rules, quotas, retention policies, schedules, and the
/// queries that scrub and retention read, on every database.
#[tokio::test]
async fn rules_policies_and_schedules() {
    each(async |db| {
        let owner = db.create_user(&user("owner", false)).await.unwrap();
        let p = db.create_project("team", false, owner, 1).await.unwrap().unwrap();

        // Rules: add, list by project and by repository, change, delete.
        let mut rule = berth_db::ImmutableRuleRow {
            id: 0,
            project_id: p,
            repo_pattern: "**".into(),
            repo_exclude: false,
            tag_pattern: "v*".into(),
            tag_exclude: false,
            disabled: false,
        };
        rule.id = db.add_immutable_rule(&rule).await.unwrap();
        let second = db.add_immutable_rule(&rule).await.unwrap();
        assert_ne!(second, rule.id);
        assert_eq!(db.immutable_rules(p).await.unwrap()[0], rule);
        assert_eq!(db.immutable_rules_for_repository("team/app").await.unwrap().len(), 2);
        assert!(db.immutable_rules_for_repository("other/app").await.unwrap().is_empty());
        rule.disabled = true;
        assert!(db.update_immutable_rule(&rule).await.unwrap());
        assert_eq!(db.immutable_rules_for_repository("team/app").await.unwrap().len(), 1);
        assert!(db.delete_immutable_rule(p, second).await.unwrap());
        assert!(!db.delete_immutable_rule(p, second).await.unwrap());

        // A guarded tag is created once and never moved.
        let repo = db.ensure_repository("team/app").await.unwrap();
        db.touch_object("sha256:b1", 10).await.unwrap();
        db.link_existing_blob(repo, "sha256:b1").await.unwrap();
        let m1 = manifest("sha256:m1", 1000, Some("v1"), "sha256:b1");
        let m2 = manifest("sha256:m2", 2000, Some("v1"), "sha256:b1");
        db.touch_object("sha256:m1", 100).await.unwrap();
        db.touch_object("sha256:m2", 100).await.unwrap();
        db.put_manifest_guarded(repo, &m1, true).await.unwrap();
        db.put_manifest_guarded(repo, &m1, true).await.unwrap();
        match db.put_manifest_guarded(repo, &m2, true).await {
            Err(berth_db::DbError::Immutable(t)) => assert_eq!(t, "v1"),
            other => panic!("moved an immutable tag: {other:?}"),
        }
        assert_eq!(
            db.tagged_manifest(repo, "v1").await.unwrap().unwrap().digest,
            "sha256:m1"
        );
        assert!(db.manifest(repo, "sha256:m2").await.unwrap().is_none(), "rolled back");
        // Unguarded, it moves.
        db.put_manifest_guarded(repo, &m2, false).await.unwrap();
        assert_eq!(
            db.tagged_manifest(repo, "v1").await.unwrap().unwrap().digest,
            "sha256:m2"
        );

        // Quotas and what counts towards them.
        assert!(db.set_project_quota(p, 5000, 3).await.unwrap());
        let row = db.project_by_id(p).await.unwrap().unwrap();
        assert_eq!((row.storage_limit, row.count_limit), (5000, 3));
        assert_eq!(db.project_artifact_count("team").await.unwrap(), 2);
        assert!(db.project_holds("team", "sha256:b1").await.unwrap());
        assert!(db.project_holds("team", "sha256:m1").await.unwrap());
        assert!(!db.project_holds("team", "sha256:zz").await.unwrap());
        assert!(!db.project_holds("tea", "sha256:b1").await.unwrap());

        // Retention sees top-level artifacts, newest first, with their tags.
        let arts = db.retention_artifacts(repo).await.unwrap();
        let seen: Vec<(&str, Vec<String>)> = arts.iter().map(|a| (a.digest.as_str(), a.tags.clone())).collect();
        assert_eq!(seen, [("sha256:m2", vec!["v1".to_string()]), ("sha256:m1", vec![])]);

        // Policies: one per project, replaced in place.
        let id = db.set_retention_policy(p, r#"{"rules":[]}"#).await.unwrap();
        assert_eq!(db.set_retention_policy(p, r#"{"rules":[1]}"#).await.unwrap(), id);
        assert_eq!(
            db.retention_policy_by_id(id).await.unwrap().unwrap().rules,
            r#"{"rules":[1]}"#
        );
        assert!(db.delete_retention_policy(id).await.unwrap());
        assert!(db.retention_policy(p).await.unwrap().is_none());

        // Schedules: each due time is taken by one caller.
        db.set_schedule("gc", "gc", "{}", "0 0 * * * *", 500).await.unwrap();
        db.set_schedule("gc", "gc", "{}", "0 0 0 * * *", 1000).await.unwrap();
        assert!(db.due_schedules(999).await.unwrap().is_empty());
        let due = db.due_schedules(1000).await.unwrap();
        assert_eq!((due.len(), due[0].cron.as_str()), (1, "0 0 0 * * *"));
        assert!(db.advance_schedule("gc", 1000, 5000).await.unwrap());
        assert!(!db.advance_schedule("gc", 1000, 5000).await.unwrap(), "taken once");
        assert_eq!(db.schedule("gc").await.unwrap().unwrap().next_run_at, 5000);
        assert!(db.delete_schedule("gc").await.unwrap());

        // Scrub's queries.
        let page = db.objects_page("", 2).await.unwrap();
        assert_eq!(page.len(), 2);
        let rest = db.objects_page(&page[1].digest, 10).await.unwrap();
        assert_eq!(page.len() + rest.len(), 3);
        assert!(db.dangling_metadata(10).await.unwrap().is_empty());

        // Deleting the project takes its rules and policy with it.
        db.set_retention_policy(p, "{}").await.unwrap();
        db.delete_project(p).await.unwrap();
        assert!(db.immutable_rules(p).await.unwrap().is_empty());
        assert!(db.retention_policy(p).await.unwrap().is_none());
    })
    .await;
}
