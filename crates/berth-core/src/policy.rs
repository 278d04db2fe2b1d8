//! What the per-project guard rails mean: which tags are immutable, and
//! whether a push fits in the project's quota.

use berth_db::ImmutableRuleRow;
use berth_oci::{ErrorCode, RepoName};

use crate::Error;

/// Harbor's "doublestar" patterns: `*` matches within one path component,
/// `**` across components, `?` one character, `{a,b}` either alternative.
pub fn pattern_matches(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    matches_at(&p, &s)
}

fn matches_at(p: &[char], s: &[char]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some('*') if p.get(1) == Some(&'*') => {
            let rest = &p[2..];
            // `**/` also matches nothing at all.
            if rest.first() == Some(&'/') && matches_at(&rest[1..], s) {
                return true;
            }
            (0..=s.len()).any(|i| matches_at(rest, &s[i..]))
        }
        Some('*') => {
            let rest = &p[1..];
            for i in 0..=s.len() {
                if matches_at(rest, &s[i..]) {
                    return true;
                }
                if s.get(i) == Some(&'/') {
                    break;
                }
            }
            false
        }
        Some('?') => s.first().is_some_and(|c| *c != '/') && matches_at(&p[1..], &s[1..]),
        Some('{') => {
            let Some(close) = p.iter().position(|c| *c == '}') else {
                return s.first() == Some(&'{') && matches_at(&p[1..], &s[1..]);
            };
            let rest = &p[close + 1..];
            p[1..close].split(|c| *c == ',').any(|alt| {
                let mut q = alt.to_vec();
                q.extend_from_slice(rest);
                matches_at(&q, s)
            })
        }
        Some(c) => s.first() == Some(c) && matches_at(&p[1..], &s[1..]),
    }
}

/// Whether an enabled rule covers a tag of a repository (named without its
/// project, as Harbor's patterns are written).
pub fn rule_covers(rule: &ImmutableRuleRow, repo_in_project: &str, tag: &str) -> bool {
    !rule.disabled
        && pattern_matches(&rule.repo_pattern, repo_in_project) != rule.repo_exclude
        && pattern_matches(&rule.tag_pattern, tag) != rule.tag_exclude
}

/// The repository's name without its project.
pub fn within_project(repo: &str) -> &str {
    repo.split_once('/').map_or(repo, |(_, r)| r)
}

/// The first rule that covers the tag, if any.
pub fn covering<'a>(rules: &'a [ImmutableRuleRow], repo: &RepoName, tag: &str) -> Option<&'a ImmutableRuleRow> {
    let inner = within_project(repo.as_str());
    rules.iter().find(|r| rule_covers(r, inner, tag))
}

pub fn immutable_error(repo: &RepoName, tag: &str, rule: Option<&ImmutableRuleRow>, what: &str) -> Error {
    let why = match rule {
        Some(r) => format!(
            " (immutability rule {}: repositories {}{}, tags {}{})",
            r.id,
            if r.repo_exclude { "not matching " } else { "" },
            r.repo_pattern,
            if r.tag_exclude { "not matching " } else { "" },
            r.tag_pattern
        ),
        None => String::new(),
    };
    Error::new(
        ErrorCode::Denied,
        format!("tag {tag} in {repo} is immutable{why}; it cannot be {what}"),
    )
    .with_detail(serde_json::json!({"tag": tag, "rule": rule.map(|r| r.id)}))
}

/// Bytes, for people.
pub fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v.abs() >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn storage_quota_error(project: &str, used: i64, adding: i64, limit: i64) -> Error {
    Error::new(
        ErrorCode::Denied,
        format!(
            "storage quota of project {project} exceeded: adding {} to the {} in use would need {}, \
             {} over its limit of {}",
            human_bytes(adding),
            human_bytes(used),
            human_bytes(used + adding),
            human_bytes(used + adding - limit),
            human_bytes(limit)
        ),
    )
    .with_detail(serde_json::json!({
        "quota": "storage", "project": project, "used": used, "adding": adding, "limit": limit
    }))
}

pub fn count_quota_error(project: &str, used: i64, limit: i64) -> Error {
    Error::new(
        ErrorCode::Denied,
        format!(
            "artifact count quota of project {project} exceeded: it holds {used} artifacts and its limit is {limit}; \
             one more would be 1 over"
        ),
    )
    .with_detail(serde_json::json!({"quota": "count", "project": project, "used": used, "limit": limit}))
}

#[cfg(test)]
mod tests {
    use super::pattern_matches as m;

    #[test]
    fn doublestar_patterns() {
        assert!(m("**", "a/b/c"));
        assert!(m("**", ""));
        assert!(m("*", "app"));
        assert!(!m("*", "team/app"));
        assert!(m("team/*", "team/app"));
        assert!(!m("team/*", "team/app/x"));
        assert!(m("team/**", "team/app/x"));
        assert!(m("**/app", "app"));
        assert!(m("**/app", "a/b/app"));
        assert!(m("v*", "v1.2.3"));
        assert!(!m("v*", "latest"));
        assert!(m("v1.?", "v1.2"));
        assert!(!m("v1.?", "v1.20"));
        assert!(m("{latest,stable}", "stable"));
        assert!(m("release-{1,2}.*", "release-2.0"));
        assert!(!m("release-{1,2}.*", "release-3.0"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exactly"));
    }
}
