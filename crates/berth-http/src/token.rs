//! `/service/token`: docker's token endpoint, and the challenge that sends
//! clients there.

use std::collections::HashMap;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use berth_core::auth::Subject;
use berth_core::{Access, Action, Error, ErrorCode, Resource};

use crate::response::{self as r, ApiError};
use crate::AppState;

/// `user:password` from `Authorization: Basic ...`.
pub fn basic_credentials(h: &HeaderMap) -> Option<(String, String)> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

pub fn bearer(h: &HeaderMap) -> Option<&str> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The scheme and host clients reach berth at, for URLs berth hands out.
pub fn external_base(st: &AppState, h: &HeaderMap) -> String {
    if let Some(u) = &st.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    let scheme = h
        .get(crate::forwarded::SCHEME_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(if st.https { "https" } else { "http" });
    format!("{scheme}://{host}")
}

/// `scope` strings for what a request needs, as in WWW-Authenticate.
pub fn scopes(wants: &[Access]) -> Vec<String> {
    let mut by_repo: Vec<(String, Vec<&str>)> = Vec::new();
    let mut catalog = false;
    for w in wants {
        match &w.resource {
            Resource::Catalog => catalog = true,
            Resource::Repository(name) => {
                let action = match w.action {
                    Action::Pull => "pull",
                    Action::Push => "push",
                    Action::Delete => "delete",
                };
                match by_repo.iter_mut().find(|(n, _)| n == name.as_str()) {
                    Some((_, acts)) => {
                        if !acts.contains(&action) {
                            acts.push(action);
                        }
                    }
                    None => by_repo.push((name.to_string(), vec![action])),
                }
            }
        }
    }
    let mut out: Vec<String> = by_repo
        .into_iter()
        .map(|(n, a)| format!("repository:{n}:{}", a.join(",")))
        .collect();
    if catalog {
        out.push("registry:catalog:*".into());
    }
    out
}

/// A 401 that tells the client where to get a token for `wants`.
pub fn challenge(st: &AppState, h: &HeaderMap, wants: &[Access], err: Error) -> Response {
    let denied = err.code == ErrorCode::Denied;
    let mut resp = ApiError::from(err).into_response();
    if let Some(auth) = &st.accounts {
        let mut v = format!(
            "Bearer realm=\"{}/service/token\",service=\"{}\"",
            external_base(st, h),
            auth.service()
        );
        let s = scopes(wants);
        if !s.is_empty() {
            v.push_str(&format!(",scope=\"{}\"", s.join(" ")));
        }
        if denied {
            v.push_str(",error=\"insufficient_scope\"");
        }

        resp.headers_mut().insert(header::WWW_AUTHENTICATE, r::header(v));
    }
    resp
}

/// GET /service/token?service=...&scope=...[&scope=...], optional Basic credentials.
/// POST /service/token with an OAuth2 password grant form does the same.
pub async fn token(State(st): State<AppState>, req: Request) -> Response {
    match issue(&st, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn issue(st: &AppState, req: Request) -> Result<Response, ApiError> {
    let Some(auth) = st.accounts.clone() else {
        return Err(Error::new(ErrorCode::Unsupported, "token authentication is not enabled").into());
    };
    let headers = req.headers().clone();
    let mut pairs: Vec<(String, String)> = req.uri().query().map(serde_urlencoded_pairs).unwrap_or_default();
    let mut creds = basic_credentials(&headers);
    if req.method() == axum::http::Method::POST {
        let body = axum::body::to_bytes(req.into_body(), 64 << 10)
            .await
            .map_err(|_| Error::new(ErrorCode::SizeInvalid, "token request body too large"))?;
        let form = serde_urlencoded_pairs(&String::from_utf8_lossy(&body));
        let get = |k: &str| form.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
        match get("grant_type").as_deref() {
            Some("password") => {
                if let (Some(u), Some(p)) = (get("username"), get("password")) {
                    creds = Some((u, p));
                }
            }
            Some(other) => {
                return Err(Error::new(ErrorCode::Unsupported, format!("grant_type {other} is not supported")).into())
            }
            None => {}
        }
        pairs.extend(form);
    }
    let q: HashMap<&str, Vec<&str>> = pairs.iter().fold(HashMap::new(), |mut m, (k, v)| {
        m.entry(k.as_str()).or_default().push(v.as_str());
        m
    });
    let scopes: Vec<String> = q
        .get("scope")
        .map(|v| v.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    let subject = match &creds {
        Some((u, p)) => auth.login(u, p).await?,
        None => Subject::Anonymous,
    };
    if creds.is_some() && scopes.is_empty() {
        // `docker login` asks for a token with no scope: that is the login.
        auth.audit(subject.name(), "login", "user", subject.name(), true).await;
    }
    let reply = auth.issue(&subject, &scopes).await?;
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(&reply).expect("serialises"),
    )
        .into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, r::header("no-store"));
    Ok(resp)
}

fn serde_urlencoded_pairs(s: &str) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{s}")
            .parse()
            .unwrap_or_else(|_| "/".parse().expect("valid uri")),
    )
    .map(|q| q.0)
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_oci::RepoName;

    #[test]
    fn scope_strings() {
        let a: RepoName = "lib/a".parse().unwrap();
        let b: RepoName = "lib/b".parse().unwrap();
        let wants = vec![
            Access::repo(&a, Action::Pull),
            Access::repo(&a, Action::Push),
            Access::repo(&b, Action::Pull),
            Access {
                resource: Resource::Catalog,
                action: Action::Pull,
            },
        ];
        assert_eq!(
            scopes(&wants),
            [
                "repository:lib/a:pull,push",
                "repository:lib/b:pull",
                "registry:catalog:*"
            ]
        );
    }

    #[test]
    fn basic_and_bearer() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic YWRtaW46cGE6c3M=".parse().unwrap());
        assert_eq!(basic_credentials(&h), Some(("admin".into(), "pa:ss".into())));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc.def.ghi".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc.def.ghi"));
        assert_eq!(basic_credentials(&h), None);
    }

    #[test]
    fn query_pairs_keep_repeated_scopes() {
        let p = serde_urlencoded_pairs("scope=repository%3Aa%3Apull&scope=repository:b:push&service=berth");
        assert_eq!(p.iter().filter(|(k, _)| k == "scope").count(), 2);
        assert_eq!(p[0].1, "repository:a:pull");
    }
}
