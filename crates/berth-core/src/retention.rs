//! Retention: per-project rules that say which artifacts to keep; in every
//! repository a rule applies to, the artifacts no rule keeps are deleted
//! (Harbor's semantics: rules are OR-ed, and only retain).
//!
//! An artifact is a top-level manifest: children of an index go with their
//! index, referrers (signatures, SBOMs) stay with their subject. Artifacts
//! with an immutable tag are never deleted.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::policy::{pattern_matches, within_project};
use crate::registry::Registry;
use crate::{Error, ErrorCode, Result};

/// Harbor's retention rule, as its API carries it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Rule {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub priority: i64,
    pub disabled: bool,
    pub action: String,
    pub template: String,
    pub params: serde_json::Map<String, Value>,
    pub tag_selectors: Vec<Selector>,
    pub scope_selectors: std::collections::BTreeMap<String, Vec<Selector>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Selector {
    pub kind: String,
    pub decoration: String,
    pub pattern: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub extras: String,
}

/// The templates berth evaluates, with their parameter.
pub const TEMPLATES: [(&str, &str, &str); 5] = [
    ("latestPushedK", "retain the most recently pushed # artifacts", "int"),
    ("latestPulledN", "retain the most recently pulled # artifacts", "int"),
    (
        "nDaysSinceLastPush",
        "retain the artifacts pushed within the last # days",
        "int",
    ),
    (
        "nDaysSinceLastPull",
        "retain the artifacts pulled within the last # days",
        "int",
    ),
    ("always", "retain always", ""),
];

fn bad(m: String) -> Error {
    Error::new(ErrorCode::Unsupported, m)
}

impl Rule {
    /// Refuses a rule berth cannot evaluate exactly as written.
    pub fn check(&self) -> Result<()> {
        if !self.action.is_empty() && self.action != "retain" {
            return Err(bad(format!(
                "rule action {:?} is not supported; rules only \"retain\"",
                self.action
            )));
        }
        if !TEMPLATES.iter().any(|t| t.0 == self.template) {
            let names: Vec<&str> = TEMPLATES.iter().map(|t| t.0).collect();
            return Err(bad(format!(
                "rule template {:?} is not supported; use one of {}",
                self.template,
                names.join(", ")
            )));
        }
        if self.template != "always" {
            let n = self.param()?;
            if n < 0 {
                return Err(bad(format!("rule parameter {} must not be negative", self.template)));
            }
        }
        for s in self.tag_selectors.iter().chain(self.scope_selectors.values().flatten()) {
            if !s.kind.is_empty() && s.kind != "doublestar" {
                return Err(bad(format!(
                    "selector kind {:?} is not supported; use \"doublestar\"",
                    s.kind
                )));
            }
            if !["matches", "excludes", "repoMatches", "repoExcludes"].contains(&s.decoration.as_str()) {
                return Err(bad(format!(
                    "selector decoration {:?} is not supported; use matches, excludes, repoMatches or repoExcludes",
                    s.decoration
                )));
            }
        }
        if self.scope_selectors.keys().any(|k| k != "repository") {
            return Err(bad("scope selectors may only select \"repository\"".into()));
        }
        Ok(())
    }

    fn param(&self) -> Result<i64> {
        self.params
            .get(&self.template)
            .and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
            .ok_or_else(|| {
                bad(format!(
                    "rule template {} needs the integer parameter {0}",
                    self.template
                ))
            })
    }

    /// Whether the rule applies to a repository (named without its project).
    pub fn covers_repository(&self, repo: &str) -> bool {
        !self.disabled
            && self
                .scope_selectors
                .get("repository")
                .is_none_or(|sels| sels.iter().all(|s| selects(s, repo)))
    }

    /// Whether the rule looks at an artifact with these tags.
    fn selects_artifact(&self, tags: &[String]) -> bool {
        if self.tag_selectors.is_empty() {
            return true;
        }
        self.tag_selectors.iter().all(|s| {
            if tags.is_empty() {
                untagged_included(s)
            } else {
                tags.iter().any(|t| selects(s, t))
            }
        })
    }
}

fn selects(s: &Selector, name: &str) -> bool {
    let m = pattern_matches(&s.pattern, name);
    if s.decoration.ends_with("xcludes") {
        !m
    } else {
        m
    }
}

/// Harbor's tag selector carries `{"untagged":true}` in extras to include
/// artifacts with no tag.
fn untagged_included(s: &Selector) -> bool {
    serde_json::from_str::<Value>(&s.extras)
        .ok()
        .and_then(|v| v.get("untagged").and_then(Value::as_bool))
        .unwrap_or(false)
}

/// Harbor's retention policy body.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Policy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
    pub algorithm: String,
    pub rules: Vec<Rule>,
    pub trigger: Trigger,
    pub scope: Scope,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Trigger {
    pub kind: String,
    pub settings: serde_json::Map<String, Value>,
}

impl Trigger {
    /// The cron expression of a scheduled trigger, if one is set.
    pub fn cron(&self) -> Option<&str> {
        self.settings
            .get("cron")
            .and_then(Value::as_str)
            .filter(|c| !c.trim().is_empty())
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Scope {
    pub level: String,
    #[serde(rename = "ref")]
    pub reference: i64,
}

impl Policy {
    pub fn check(&self) -> Result<()> {
        if !self.algorithm.is_empty() && self.algorithm != "or" {
            return Err(bad(format!(
                "algorithm {:?} is not supported; use \"or\"",
                self.algorithm
            )));
        }
        if !self.scope.level.is_empty() && self.scope.level != "project" {
            return Err(bad(format!(
                "scope level {:?} is not supported; use \"project\"",
                self.scope.level
            )));
        }
        if self.rules.len() > 15 {
            return Err(bad(format!("{} rules; a policy holds at most 15", self.rules.len())));
        }
        for r in &self.rules {
            r.check()?;
        }
        if let Some(c) = self.trigger.cron() {
            crate::cron::Cron::parse(c).map_err(|e| bad(e.to_string()))?;
        }
        Ok(())
    }
}

/// What a retention run decided for one repository.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RepoOutcome {
    pub repository: String,
    pub total: usize,
    pub retained: usize,
    /// `digest (tags)` of each artifact deleted (or, in a dry run, to be).
    pub deleted: Vec<String>,
    /// Artifacts that would have gone but stay: immutable tags, or in use.
    pub kept: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RetentionReport {
    pub policy_id: i64,
    pub dry_run: bool,
    pub repositories: Vec<RepoOutcome>,
    pub deleted: usize,
}

/// Which artifacts the rules keep (indexes into `artifacts`, which are
/// newest push first).
pub fn retained(rules: &[Rule], artifacts: &[berth_db::ArtifactRow], now_ms: i64) -> Vec<bool> {
    let mut keep = vec![false; artifacts.len()];
    for rule in rules {
        let selected: Vec<usize> = (0..artifacts.len())
            .filter(|&i| rule.selects_artifact(&artifacts[i].tags))
            .collect();
        let n = rule.param().unwrap_or(0);
        let day = 86_400_000i64;
        match rule.template.as_str() {
            "always" => selected.iter().for_each(|&i| keep[i] = true),
            "latestPushedK" => selected.iter().take(n as usize).for_each(|&i| keep[i] = true),
            "latestPulledN" => {
                let mut pulled: Vec<usize> = selected
                    .iter()
                    .copied()
                    .filter(|&i| artifacts[i].pulled_at.is_some())
                    .collect();
                pulled.sort_by_key(|&i| std::cmp::Reverse(artifacts[i].pulled_at));
                pulled.iter().take(n as usize).for_each(|&i| keep[i] = true);
            }
            "nDaysSinceLastPush" => selected
                .iter()
                .filter(|&&i| artifacts[i].pushed_at >= now_ms - n * day)
                .for_each(|&i| keep[i] = true),
            "nDaysSinceLastPull" => selected
                .iter()
                .filter(|&&i| artifacts[i].pulled_at.is_some_and(|p| p >= now_ms - n * day))
                .for_each(|&i| keep[i] = true),
            _ => {}
        }
    }
    keep
}

impl Registry {
    /// Applies a project's retention rules (or, dry, reports what they would delete).
    pub async fn apply_retention(
        &self,
        project: &str,
        policy_id: i64,
        rules: &[Rule],
        dry_run: bool,
        log: &(dyn Fn(String) + Send + Sync),
    ) -> Result<RetentionReport> {
        let mut report = RetentionReport {
            policy_id,
            dry_run,
            ..RetentionReport::default()
        };
        let active: Vec<&Rule> = rules.iter().filter(|r| !r.disabled).collect();
        if active.is_empty() {
            log("no enabled rules: nothing to do".into());
            return Ok(report);
        }
        let prefix = format!("{project}/");
        let mut offset = 0;
        loop {
            let (repos, _) = self.db().list_repositories(&prefix, None, offset, 100).await?;
            if repos.is_empty() {
                break;
            }
            offset += repos.len() as i64;
            for repo in repos {
                let inner = within_project(&repo.name).to_string();
                let applying: Vec<Rule> = active
                    .iter()
                    .filter(|r| r.covers_repository(&inner))
                    .map(|r| (*r).clone())
                    .collect();
                if applying.is_empty() {
                    continue;
                }
                let name: berth_oci::RepoName = repo
                    .name
                    .parse()
                    .map_err(|e| Error::internal("stored repository name", e))?;
                let artifacts = self.db().retention_artifacts(repo.id).await?;
                let keep = retained(&applying, &artifacts, berth_db::now_ms());
                let mut out = RepoOutcome {
                    repository: repo.name.clone(),
                    total: artifacts.len(),
                    retained: keep.iter().filter(|k| **k).count(),
                    ..RepoOutcome::default()
                };
                for (a, _) in artifacts.iter().zip(&keep).filter(|(_, k)| !**k) {
                    let label = if a.tags.is_empty() {
                        format!("{} (untagged)", a.digest)
                    } else {
                        format!("{} ({})", a.digest, a.tags.join(", "))
                    };
                    if let Err(e) = self.check_tags_mutable(&name, repo.id, Some(&a.digest)).await {
                        log(format!("{}: keeps {label}: {}", repo.name, e.message));
                        out.kept.push(label);
                        continue;
                    }
                    if !dry_run {
                        let reference = berth_oci::Reference::Digest(
                            a.digest.parse().map_err(|e| Error::internal("stored digest", e))?,
                        );
                        match self.delete_manifest(&name, &reference).await {
                            Ok(()) => {}
                            Err(e) if e.code == ErrorCode::ManifestUnknown => continue,
                            Err(e) if e.code == ErrorCode::InUse || e.code == ErrorCode::Denied => {
                                log(format!("{}: keeps {label}: {}", repo.name, e.message));
                                out.kept.push(label);
                                continue;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    log(format!(
                        "{}: {} {label}",
                        repo.name,
                        if dry_run { "would delete" } else { "deleted" }
                    ));
                    out.deleted.push(label);
                }
                report.deleted += out.deleted.len();
                log(format!(
                    "{}: {} artifacts, {} retained, {} {}",
                    repo.name,
                    out.total,
                    out.retained,
                    out.deleted.len(),
                    if dry_run { "to delete" } else { "deleted" }
                ));
                report.repositories.push(out);
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_db::ArtifactRow;

    fn a(d: &str, pushed: i64, pulled: Option<i64>, tags: &[&str]) -> ArtifactRow {
        ArtifactRow {
            digest: d.into(),
            pushed_at: pushed,
            pulled_at: pulled,
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn rule(template: &str, n: i64, tag: &str, untagged: bool) -> Rule {
        let mut params = serde_json::Map::new();
        params.insert(template.into(), n.into());
        Rule {
            template: template.into(),
            params,
            tag_selectors: vec![Selector {
                kind: "doublestar".into(),
                decoration: "matches".into(),
                pattern: tag.into(),
                extras: format!("{{\"untagged\":{untagged}}}"),
            }],
            ..Rule::default()
        }
    }

    #[test]
    fn rules_keep_what_they_select() {
        let day = 86_400_000;
        let now = 100 * day;
        let arts = vec![
            a("d5", now - day, None, &["v5"]),
            a("d4", now - 2 * day, Some(now - 10 * day), &["v4", "latest"]),
            a("d3", now - 3 * day, Some(now), &["v3"]),
            a("d2", now - 30 * day, None, &[]),
            a("d1", now - 40 * day, Some(now - day), &["dev-1"]),
        ];
        let keep = |rules: &[Rule]| -> Vec<&str> {
            retained(rules, &arts, now)
                .iter()
                .zip(&arts)
                .filter(|(k, _)| **k)
                .map(|(_, a)| a.digest.as_str())
                .collect()
        };
        assert_eq!(keep(&[rule("latestPushedK", 2, "**", false)]), ["d5", "d4"]);
        assert_eq!(keep(&[rule("latestPushedK", 2, "v*", false)]), ["d5", "d4"]);
        assert_eq!(keep(&[rule("latestPushedK", 10, "dev-*", false)]), ["d1"]);
        assert_eq!(keep(&[rule("latestPulledN", 2, "**", false)]), ["d3", "d1"]);
        assert_eq!(keep(&[rule("nDaysSinceLastPush", 5, "**", false)]), ["d5", "d4", "d3"]);
        assert_eq!(keep(&[rule("nDaysSinceLastPull", 5, "**", false)]), ["d3", "d1"]);
        assert_eq!(keep(&[rule("always", 0, "**", true)]), ["d5", "d4", "d3", "d2", "d1"]);
        assert_eq!(keep(&[rule("always", 0, "**", false)]), ["d5", "d4", "d3", "d1"]);
        // OR between rules.
        assert_eq!(
            keep(&[rule("latestPushedK", 1, "**", false), rule("always", 0, "dev-*", false)]),
            ["d5", "d1"]
        );
        // An excluding selector.
        let mut r = rule("always", 0, "dev-*", false);
        r.tag_selectors[0].decoration = "excludes".into();
        assert_eq!(keep(&[r]), ["d5", "d4", "d3"]);
    }

    #[test]
    fn unsupported_rules_are_refused_with_a_reason() {
        let mut r = rule("latestPushedK", 1, "**", false);
        assert!(r.check().is_ok());
        r.template = "mostPopular".into();
        assert!(r.check().unwrap_err().message.contains("not supported"));
        let r = Rule {
            template: "latestPushedK".into(),
            ..Rule::default()
        };
        assert!(r.check().unwrap_err().message.contains("integer parameter"));
    }
}
