//! Go vanity import paths: which repository serves `host/path`, read from
//! a govanityurls `vanity.yaml` (both of its forms) and matched by whole
//! path segments.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VanityPath {
    /// `/gowechat` or `/x/experiments`: no trailing slash.
    pub path: String,
    pub repo: String,
    /// git, hg, svn, bzr, fossil, or mod (repo is then a GOPROXY URL).
    pub vcs: String,
    /// `go-source` content after the import prefix, when known.
    pub display: Option<String>,
    /// The optional fourth go-import field: the module's directory in the repository.
    pub subdirectory: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VanityConfig {
    pub host: Option<String>,
    pub cache_max_age: u64,
    /// Longest path first, so the most specific prefix wins.
    pub paths: Vec<VanityPath>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    repo: String,
    #[serde(default)]
    vcs: Option<String>,
    #[serde(default)]
    display: Option<String>,
    #[serde(default)]
    subdirectory: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStructured {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    cache_max_age: Option<u64>,
    paths: BTreeMap<String, RawEntry>,
}

const VCS: [&str; 6] = ["git", "hg", "svn", "bzr", "fossil", "mod"];
pub const DEFAULT_MAX_AGE: u64 = 86_400;

/// The VCS of a well-known host, as govanityurls infers it.
fn infer_vcs(repo: &str) -> Option<&'static str> {
    let host = repo.split("://").nth(1)?.split('/').next()?;
    match host {
        "github.com" | "gitlab.com" | "bitbucket.org" | "codeberg.org" | "git.sr.ht" => Some("git"),
        "hg.sr.ht" => Some("hg"),
        _ => None,
    }
}

/// `go-source` for repositories on hosts whose browse URLs are known.
fn infer_display(repo: &str) -> Option<String> {
    let r = repo.trim_end_matches('/').trim_end_matches(".git");
    let host = r.split("://").nth(1)?.split('/').next()?;
    match host {
        "github.com" => Some(format!(
            "{r} {r}/tree/master{{/dir}} {r}/blob/master{{/dir}}/{{file}}#L{{line}}"
        )),
        "gitlab.com" | "codeberg.org" => {
            let sep = if host == "gitlab.com" {
                "/-"
            } else {
                "/src/branch/master"
            };
            if host == "gitlab.com" {
                Some(format!(
                    "{r} {r}{sep}/tree/master{{/dir}} {r}{sep}/blob/master{{/dir}}/{{file}}#L{{line}}"
                ))
            } else {
                Some(format!("{r} {r}{sep}{{/dir}} {r}{sep}{{/dir}}/{{file}}#L{{line}}"))
            }
        }
        _ => None,
    }
}

impl VanityPath {
    /// Checks one entry: the path's shape, the repo URL, the VCS (inferred
    /// for well-known hosts), and derives go-source where it can.
    pub fn new(
        path: &str,
        repo: String,
        vcs: Option<String>,
        display: Option<String>,
        subdirectory: Option<String>,
    ) -> Result<VanityPath, String> {
        let p = path;
        let path = p.trim_end_matches('/').to_string();
        if !path.starts_with('/') || path.len() < 2 || path.contains("//") || path.contains(char::is_whitespace) {
            return Err(format!("path {p:?} must start with / and name at least one segment"));
        }
        if !repo.contains("://") || repo.contains(char::is_whitespace) {
            return Err(format!("path {p}: repo {repo:?} must be a URL"));
        }
        let vcs = match vcs {
            Some(v) if VCS.contains(&v.as_str()) => v,
            Some(v) => return Err(format!("path {p}: vcs {v:?} is not one of {}", VCS.join(", "))),
            None => infer_vcs(&repo)
                .ok_or_else(|| format!("path {p}: say which vcs serves {repo} (git, hg, svn, bzr, fossil or mod)"))?
                .to_string(),
        };
        if subdirectory
            .as_deref()
            .is_some_and(|s| s.contains(char::is_whitespace) || s.starts_with('/'))
        {
            return Err(format!("path {p}: subdirectory must be a relative path without spaces"));
        }
        let display = display
            .filter(|d| !d.is_empty())
            .or_else(|| if vcs == "git" { infer_display(&repo) } else { None });
        Ok(VanityPath {
            path,
            repo,
            vcs,
            display,
            subdirectory: subdirectory.filter(|s| !s.is_empty()),
        })
    }
}

impl VanityConfig {
    /// This configuration with more paths (those already here win).
    pub fn with(&self, extra: Vec<VanityPath>) -> VanityConfig {
        let mut c = self.clone();
        for e in extra {
            if !c.paths.iter().any(|p| p.path == e.path) {
                c.paths.push(e);
            }
        }
        c.paths
            .sort_by(|a, b| b.path.len().cmp(&a.path.len()).then(a.path.cmp(&b.path)));
        c
    }

    /// Parses vanity.yaml: `{host, cache_max_age, paths: {/p: {repo, vcs, display}}}`
    /// or the flat `{/p: {repo: ...}}`. Errors name the line.
    pub fn parse(text: &str) -> Result<VanityConfig, String> {
        let value: serde_norway::Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        let structured = value.get("paths").is_some();
        let (host, max_age, raw) = if structured {
            let r: RawStructured = serde_norway::from_str(text).map_err(|e| e.to_string())?;
            (r.host, r.cache_max_age, r.paths)
        } else {
            // The flat form: every top-level key is a path. `host` and
            // `cache_max_age` are allowed beside them.
            let mut map: BTreeMap<String, serde_norway::Value> =
                serde_norway::from_str(text).map_err(|e| e.to_string())?;
            let host = map.remove("host").and_then(|v| v.as_str().map(str::to_string));
            let max_age = map.remove("cache_max_age").and_then(|v| v.as_u64());
            let mut paths = BTreeMap::new();
            for (k, v) in map {
                if !k.starts_with('/') {
                    return Err(format!(
                        "{}: top-level key {k:?} is not a path (paths start with /)",
                        line_of(text, &k)
                    ));
                }
                let e: RawEntry =
                    serde_norway::from_value(v).map_err(|e| format!("{}: path {k}: {e}", line_of(text, &k)))?;
                paths.insert(k, e);
            }
            (host, max_age, paths)
        };
        let mut paths = Vec::new();
        for (p, e) in raw {
            let line = line_of(text, &p);
            let entry =
                VanityPath::new(&p, e.repo, e.vcs, e.display, e.subdirectory).map_err(|m| format!("{line}: {m}"))?;
            paths.push(entry);
        }
        paths.sort_by(|a, b| b.path.len().cmp(&a.path.len()).then(a.path.cmp(&b.path)));
        Ok(VanityConfig {
            host,
            cache_max_age: max_age.unwrap_or(DEFAULT_MAX_AGE),
            paths,
        })
    }

    /// The entry whose path is `request` or a whole-segment prefix of it.
    pub fn find(&self, request: &str) -> Option<&VanityPath> {
        let request = request.trim_end_matches('/');
        self.paths.iter().find(|p| {
            request == p.path || (request.starts_with(&p.path) && request.as_bytes().get(p.path.len()) == Some(&b'/'))
        })
    }
}

/// "line N" for the first line that mentions `key` as a mapping key.
fn line_of(text: &str, key: &str) -> String {
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.starts_with(&format!("{key}:"))
                || t.starts_with(&format!("\"{key}\":"))
                || t.starts_with(&format!("'{key}':"))
        })
        .map(|n| format!("line {}", n + 1))
        .unwrap_or_else(|| "vanity.yaml".into())
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_form_of_the_source_documents() {
        let c = VanityConfig::parse(
            "/gowechat:\n        repo: https://github.com/bigwhite/gowechat\n\n/x/experiments:\n        repo: https://github.com/bigwhite/experiments\n",
        )
        .unwrap();
        assert_eq!(c.paths.len(), 2);
        assert_eq!(c.cache_max_age, DEFAULT_MAX_AGE);
        let p = c.find("/gowechat/mp").unwrap();
        assert_eq!((p.path.as_str(), p.vcs.as_str()), ("/gowechat", "git"));
        assert!(p
            .display
            .as_deref()
            .unwrap()
            .contains("/blob/master{/dir}/{file}#L{line}"));
        assert_eq!(
            c.find("/x/experiments").unwrap().repo,
            "https://github.com/bigwhite/experiments"
        );
    }

    #[test]
    fn structured_form() {
        let c = VanityConfig::parse(
            "host: example.test\ncache_max_age: 60\npaths:\n  /a:\n    repo: https://git.example.test/a.git\n    vcs: git\n  /a/b:\n    repo: https://proxy.example.test\n    vcs: mod\n    subdirectory: sub\n  /h:\n    repo: https://hg.example.test/h\n    vcs: hg\n    display: \"https://x _ _\"\n",
        )
        .unwrap();
        assert_eq!(c.host.as_deref(), Some("example.test"));
        assert_eq!(c.cache_max_age, 60);
        // The longest prefix wins; segments are whole.
        assert_eq!(c.find("/a/b/c").unwrap().vcs, "mod");
        assert_eq!(c.find("/a/bc").unwrap().path, "/a");
        assert_eq!(c.find("/a/b").unwrap().subdirectory.as_deref(), Some("sub"));
        assert!(c.find("/ab").is_none());
        assert!(c.find("/").is_none());
        assert_eq!(c.find("/h/").unwrap().display.as_deref(), Some("https://x _ _"));
        assert_eq!(c.find("/a").unwrap().display, None, "no go-source for unknown hosts");
    }

    #[test]
    fn errors_name_the_line() {
        let e = VanityConfig::parse("/a:\n  repo: https://example.test/a\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("vcs"), "{e}");
        let e = VanityConfig::parse("paths:\n  /a:\n    repo: https://github.com/a/a\n    vsc: git\n").unwrap_err();
        assert!(e.contains("vsc") && e.contains("line"), "{e}");
        let e = VanityConfig::parse("/a:\n  repo: https://github.com/a/a\n/b: [\n").unwrap_err();
        assert!(e.contains("line"), "{e}");
        let e = VanityConfig::parse("a:\n  repo: https://github.com/a/a\n").unwrap_err();
        assert!(e.contains("line 1") && e.contains("not a path"), "{e}");
        let e = VanityConfig::parse("/a:\n  repo: https://x.test/a\n  vcs: cvs\n").unwrap_err();
        assert!(e.contains("cvs"), "{e}");
    }

    #[test]
    fn escaping() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
