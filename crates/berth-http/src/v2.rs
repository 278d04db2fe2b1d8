//! `/v2/`: the OCI distribution API.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use berth_core::{Access, Action, Credentials, Error, ErrorCode, Page, Resource};
use berth_oci::{Digest, RepoName, UploadId};
use futures_util::TryStreamExt;

use crate::endpoint::{digest, Endpoint};
use crate::response::{self as r, ApiError, API_VERSION};
use crate::AppState;

type Result<T> = std::result::Result<T, ApiError>;

/// Every (method, endpoint) the registry API answers, for the authorization
/// table test. Paths use `{name}`, `{reference}`, `{digest}` and `{id}`.
pub const V2_ROUTES: &[(&str, &str)] = &[
    ("GET", "/v2/"),
    ("GET", "/v2/_catalog"),
    ("GET", "/v2/{name}/tags/list"),
    ("GET", "/v2/{name}/manifests/{reference}"),
    ("HEAD", "/v2/{name}/manifests/{reference}"),
    ("PUT", "/v2/{name}/manifests/{reference}"),
    ("DELETE", "/v2/{name}/manifests/{reference}"),
    ("GET", "/v2/{name}/blobs/{digest}"),
    ("HEAD", "/v2/{name}/blobs/{digest}"),
    ("DELETE", "/v2/{name}/blobs/{digest}"),
    ("POST", "/v2/{name}/blobs/uploads/"),
    ("GET", "/v2/{name}/blobs/uploads/{id}"),
    ("PATCH", "/v2/{name}/blobs/uploads/{id}"),
    ("PUT", "/v2/{name}/blobs/uploads/{id}"),
    ("DELETE", "/v2/{name}/blobs/uploads/{id}"),
    ("GET", "/v2/{name}/referrers/{digest}"),
];

pub async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Every /v2 request comes through here: parse, authorize, handle.
pub async fn dispatch(State(st): State<AppState>, req: Request) -> Response {
    let path = req.uri().path();
    let rest = path.strip_prefix("/v2").unwrap_or(path);
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let mut resp = match Endpoint::parse(rest) {
        None => ApiError::from(Error::new(ErrorCode::NameUnknown, "no such endpoint")).into_response(),
        Some(Err(e)) => ApiError::from(e).into_response(),
        Some(Ok(ep)) => match handle(&st, ep, req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        },
    };
    resp.headers_mut().insert(API_VERSION, r::header("registry/2.0"));
    resp
}

fn query(req: &Request) -> HashMap<String, String> {
    Query::<HashMap<String, String>>::try_from_uri(req.uri())
        .map(|q| q.0)
        .unwrap_or_default()
}

/// What a request needs to be allowed to do.
fn accesses(ep: &Endpoint, method: &Method, q: &HashMap<String, String>) -> Result<Vec<Access>> {
    let pull = |n: &RepoName| Access::repo(n, Action::Pull);
    let push = |n: &RepoName| Access::repo(n, Action::Push);
    let del = |n: &RepoName| Access::repo(n, Action::Delete);
    let write = matches!(*method, Method::PUT | Method::PATCH | Method::POST);
    Ok(match ep {
        Endpoint::Base => vec![],
        Endpoint::Catalog => vec![Access {
            resource: Resource::Catalog,
            action: Action::Pull,
        }],
        Endpoint::Tags { name } | Endpoint::Referrers { name, .. } => vec![pull(name)],
        Endpoint::Manifest { name, .. } | Endpoint::Blob { name, .. } if *method == Method::DELETE => {
            vec![del(name)]
        }
        Endpoint::Manifest { name, .. } if write => vec![pull(name), push(name)],
        Endpoint::Manifest { name, .. } | Endpoint::Blob { name, .. } => vec![pull(name)],
        Endpoint::Uploads { name } => {
            let mut v = vec![pull(name), push(name)];
            if let Some(from) = q.get("from") {
                let from: RepoName = from
                    .parse()
                    .map_err(|e: berth_oci::NameError| Error::new(ErrorCode::NameInvalid, e.to_string()))?;
                v.push(pull(&from));
            }
            v
        }
        Endpoint::Upload { name, .. } => vec![pull(name), push(name)],
    })
}

async fn handle(st: &AppState, ep: Endpoint, req: Request) -> Result<Response> {
    let q = query(&req);
    let method = req.method().clone();
    let wants = accesses(&ep, &method, &q)?;
    let creds = Credentials {
        bearer: crate::token::bearer(req.headers()),
    };
    let who = match st.auth.authorize(&creds, &wants) {
        Ok(p) => p,
        Err(e) if e.code == ErrorCode::Unauthorized || e.code == ErrorCode::Denied => {
            let message = e.message.clone();
            return Err(ApiError::from(e.clone()).with_response(crate::token::challenge(
                st,
                req.headers(),
                &wants,
                Error::new(e.code, message),
            )));
        }

        Err(e) => return Err(e.into()),
    };
    let audit_target = audit_target(&ep, &method, st.audit_pulls);
    // What a webhook would say of this request, decided before it is served
    // (most requests go to projects that no webhook listens to).
    let hook = st.webhooks.as_ref().and_then(|w| {
        let project = ep.name()?.as_str().split('/').next()?;
        let (on_success, quota) = hook_events(&ep, &method);
        let wanted = on_success.is_some_and(|e| w.may_want(project, e))
            || (quota && w.may_want(project, berth_core::webhook::QUOTA_EXCEED));
        wanted.then(|| {
            let base = crate::token::external_base(st, req.headers());
            let host = base.split_once("://").map_or(base.as_str(), |(_, h)| h).to_string();
            (w, on_success, ep.clone(), host)
        })
    });
    let served = serve(st, ep, req, q, method).await;
    if let Some((w, on_success, ep, host)) = hook {
        notify(w, &ep, on_success, &served, &who.name, &host);
    }
    let resp = served?;
    if let (Some(accounts), Some((op, resource))) = (&st.accounts, audit_target) {
        if resp.status().is_success() {
            accounts.audit(&who.name, op, "artifact", &resource, true).await;
        }
    }
    Ok(resp)
}

/// The webhook event a request makes when it succeeds, and whether a quota
/// can refuse it (which makes a QUOTA_EXCEED event).
fn hook_events(ep: &Endpoint, method: &Method) -> (Option<&'static str>, bool) {
    use berth_core::webhook::*;
    match (ep, method) {
        (Endpoint::Manifest { .. }, &Method::PUT) => (Some(PUSH_ARTIFACT), true),
        (Endpoint::Manifest { .. }, &Method::GET) => (Some(PULL_ARTIFACT), false),
        (Endpoint::Manifest { .. }, &Method::DELETE) => (Some(DELETE_ARTIFACT), false),
        (Endpoint::Uploads { .. } | Endpoint::Upload { .. }, _) => (None, true),
        _ => (None, false),
    }
}

/// Queues the webhook deliveries of a request's outcome.
fn notify(
    w: &std::sync::Arc<berth_core::webhook::Webhooks>,
    ep: &Endpoint,
    on_success: Option<&'static str>,
    served: &Result<Response>,
    operator: &str,
    host: &str,
) {
    use berth_core::webhook::{Notice, QUOTA_EXCEED};
    let Some(name) = ep.name() else { return };
    let (project, short) = name.as_str().split_once('/').unwrap_or(("", name.as_str()));
    let repository = serde_json::json!({
        "name": short, "namespace": project, "repo_full_name": name.as_str(),
    });
    let reference = match ep {
        Endpoint::Manifest { reference, .. } => Some(reference.to_string()),
        _ => None,
    };
    let (event_type, data) = match (served, on_success) {
        (Ok(resp), Some(event)) if resp.status().is_success() => {
            let digest = resp
                .headers()
                .get(r::CONTENT_DIGEST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .or_else(|| reference.clone().filter(|r| r.contains(':')));
            let tag = reference.clone().filter(|r| !r.contains(':'));
            let url = match &tag {
                Some(t) => format!("{host}/{name}:{t}"),
                None => format!("{host}/{name}@{}", digest.clone().unwrap_or_default()),
            };
            let data = serde_json::json!({
                "resources": [{"digest": digest, "tag": tag, "resource_url": url}],
                "repository": repository,
            });
            (event, data)
        }
        // A push refused by a quota, whichever step the quota stopped.
        (Err(e), _) if e.err.detail.as_ref().is_some_and(|d| d.get("quota").is_some()) => {
            let data = serde_json::json!({
                "resources": [{"tag": reference}],
                "repository": repository,
                "custom_attributes": {"Details": e.err.message},
            });
            (QUOTA_EXCEED, data)
        }
        _ => return,
    };
    w.notify_later(Notice {
        event_type,
        project: project.to_string(),
        operator: operator.to_string(),
        data,
    });
}

/// Registry writes that go into the audit log: (operation, resource).
fn audit_target(ep: &Endpoint, method: &Method, pulls: bool) -> Option<(&'static str, String)> {
    match (ep, method) {
        (Endpoint::Manifest { name, reference }, &Method::GET) if pulls => {
            Some(("pull", format!("{name}:{reference}")))
        }

        (Endpoint::Manifest { name, reference }, &Method::PUT) => Some(("create", format!("{name}:{reference}"))),
        (Endpoint::Manifest { name, reference }, &Method::DELETE) => Some(("delete", format!("{name}:{reference}"))),
        (Endpoint::Blob { name, digest }, &Method::DELETE) => Some(("delete", format!("{name}@{digest}"))),
        _ => None,
    }
}

async fn serve(
    st: &AppState,
    ep: Endpoint,
    req: Request,
    q: HashMap<String, String>,
    method: Method,
) -> Result<Response> {
    let reg = &st.registry;
    let unsupported = || -> Result<Response> {
        Err(Error::new(ErrorCode::Unsupported, format!("{method} is not supported here")).into())
    };
    let upstream = match (&st.proxy, ep.name()) {
        (Some(p), Some(name)) => p.upstream(name).await?,
        _ => None,
    };
    if let Some(up) = &upstream {
        let push = match &ep {
            Endpoint::Manifest { .. } => method == Method::PUT,
            Endpoint::Uploads { .. } | Endpoint::Upload { .. } => true,
            _ => false,
        };
        if push {
            return Err(Error::new(
                ErrorCode::Denied,
                format!(
                    "project {} is a proxy cache of {}: it takes no pushes; push to another project",
                    up.project, up.url
                ),
            )
            .into());
        }
    }
    match ep {
        Endpoint::Base => match method {
            Method::GET | Method::HEAD => Ok(json(StatusCode::OK, b"{}".to_vec())),
            _ => unsupported(),
        },
        Endpoint::Catalog => match method {
            Method::GET => {
                let n = page_n(&q)?;
                let page = reg.catalog(n, q.get("last").map(String::as_str)).await?;
                let body = serde_json::json!({ "repositories": page.items });
                Ok(paged(body, &page, |last| {
                    format!(
                        "/v2/_catalog?n={}&last={}",
                        n.unwrap_or(reg.limits().default_catalog_page),
                        last
                    )
                }))
            }
            _ => unsupported(),
        },
        Endpoint::Tags { name } => match method {
            Method::GET => {
                let n = page_n(&q)?;
                let page = reg.tags(&name, n, q.get("last").map(String::as_str)).await?;
                let body = serde_json::json!({ "name": name.as_str(), "tags": page.items });
                Ok(paged(body, &page, |last| {
                    format!("/v2/{name}/tags/list?n={}&last={last}", n.unwrap_or(0))
                }))
            }
            _ => unsupported(),
        },
        Endpoint::Manifest { name, reference } => match method {
            Method::GET | Method::HEAD => {
                let accept = accept_list(req.headers());
                let with_body = method == Method::GET;
                let m = match (&st.proxy, &upstream) {
                    (Some(p), Some(up)) => p.manifest(up, &name, &reference, &accept, with_body).await?,
                    _ => reg.get_manifest(&name, &reference, &accept, with_body).await?,
                };
                let mut b = Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, &m.media_type)
                    .header(header::CONTENT_LENGTH, m.size)
                    .header(r::CONTENT_DIGEST, m.digest.to_string())
                    .header(header::ETAG, format!("\"{}\"", m.digest));
                b = b.header(header::CACHE_CONTROL, "no-cache");
                let body = match m.body {
                    Some(s) => Body::from_stream(s),
                    None => Body::empty(),
                };
                Ok(b.body(body).expect("valid response"))
            }
            Method::PUT => {
                let content_type = req
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let limit = reg.limits().max_manifest_bytes;
                let too_large = || {
                    Error::new(
                        ErrorCode::TooLarge,
                        format!("manifest is larger than the limit of {limit} bytes"),
                    )
                };
                if content_length(req.headers()).is_some_and(|n| n > limit as u64) {
                    return Err(too_large().into());
                }
                let body = axum::body::to_bytes(req.into_body(), limit)
                    .await
                    .map_err(|_| too_large())?;
                let put = reg
                    .put_manifest(&name, &reference, content_type.as_deref(), body)
                    .await?;
                let mut b = Response::builder()
                    .status(StatusCode::CREATED)
                    .header(header::LOCATION, format!("/v2/{name}/manifests/{}", put.digest))
                    .header(r::CONTENT_DIGEST, put.digest.to_string())
                    .header(header::CONTENT_LENGTH, 0);
                if let Some(s) = put.subject {
                    b = b.header(r::OCI_SUBJECT, s.to_string());
                }
                Ok(b.body(Body::empty()).expect("valid response"))
            }
            Method::DELETE => {
                reg.delete_manifest(&name, &reference).await?;
                Ok(accepted())
            }
            _ => unsupported(),
        },
        Endpoint::Blob { name, digest } => match method {
            Method::GET | Method::HEAD => match get_blob(st, &name, &digest, &method, req.headers()).await {
                Err(e) if e.err.code == ErrorCode::BlobUnknown && upstream.is_some() => {
                    let (Some(p), Some(up)) = (&st.proxy, &upstream) else {
                        unreachable!("checked")
                    };
                    proxied_blob(p, up, &name, &digest, &method).await
                }
                other => other,
            },
            Method::DELETE => {
                reg.delete_blob(&name, &digest).await?;
                Ok(accepted())
            }
            _ => unsupported(),
        },
        Endpoint::Uploads { name } => match method {
            Method::POST => post_upload(st, &name, &q, req).await,
            _ => unsupported(),
        },
        Endpoint::Upload { name, id } => match method {
            Method::GET => {
                let size = reg
                    .upload_status(&name, &id)
                    .await
                    .map_err(|e| upload_error(&name, &id, e))?;
                Ok(upload_response(StatusCode::NO_CONTENT, &name, &id, size))
            }
            Method::PATCH => {
                let start = content_range_start(req.headers())?;
                let size = reg
                    .append_upload(&name, &id, start, body_stream(req))
                    .await
                    .map_err(|e| upload_error(&name, &id, e))?;
                Ok(upload_response(StatusCode::ACCEPTED, &name, &id, size))
            }
            Method::PUT => {
                let d = digest(q.get("digest").ok_or_else(|| {
                    Error::new(
                        ErrorCode::DigestInvalid,
                        "the digest query parameter is required to finish an upload",
                    )
                })?)?;
                let start = content_range_start(req.headers())?;
                let body = if content_length(req.headers()) == Some(0) {
                    None
                } else {
                    Some(body_stream(req))
                };
                reg.finish_upload(&name, &id, &d, start, body)
                    .await
                    .map_err(|e| upload_error(&name, &id, e))?;
                Ok(blob_created(&name, &d))
            }
            Method::DELETE => {
                reg.cancel_upload(&name, &id).await?;
                Ok(Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Body::empty())
                    .expect("valid response"))
            }
            _ => unsupported(),
        },
        Endpoint::Referrers { name, digest } => match method {
            Method::GET => {
                let filter = q.get("artifactType").map(String::as_str);
                let body = reg.referrers(&name, &digest, filter).await?;
                let mut b = Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, berth_oci::media_types::OCI_INDEX);
                if filter.is_some() {
                    b = b.header(r::OCI_FILTERS_APPLIED, "artifactType");
                }
                Ok(b.body(Body::from(body)).expect("valid response"))
            }
            _ => unsupported(),
        },
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("valid response")
}

fn accepted() -> Response {
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}

fn paged(body: serde_json::Value, page: &Page, link: impl Fn(&str) -> String) -> Response {
    let mut resp = json(StatusCode::OK, serde_json::to_vec(&body).expect("serialises"));
    if let Some(last) = &page.next {
        let v = format!("<{}>; rel=\"next\"", link(&urlencode(last)));
        resp.headers_mut().insert(header::LINK, r::header(v));
    }
    resp
}

fn urlencode(s: &str) -> String {
    // Names and tags are ASCII; only '/' in repository names needs escaping here.
    s.replace('%', "%25").replace('/', "%2F")
}

fn page_n(q: &HashMap<String, String>) -> Result<Option<usize>> {
    match q.get("n") {
        None => Ok(None),
        Some(v) => v.parse::<usize>().map(Some).map_err(|_| {
            Error::new(
                ErrorCode::PaginationNumberInvalid,
                format!("n={v:?} is not a non-negative number"),
            )
            .into()
        }),
    }
}

fn accept_list(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.split(';').next().unwrap_or("").trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The first byte of an upload chunk's `Content-Range: <start>-<end>`.
fn content_range_start(h: &HeaderMap) -> Result<Option<u64>> {
    let Some(v) = h.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || Error::new(ErrorCode::BlobUploadInvalid, "Content-Range must be <start>-<end>");
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s.strip_prefix("bytes ").unwrap_or(s).trim();
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let end: u64 = b.trim().parse().map_err(|_| bad())?;
    if end < start {
        return Err(Error::new(
            ErrorCode::RangeInvalid,
            format!("Content-Range {s} ends before it starts"),
        )
        .into());
    }
    if let Some(len) = content_length(h) {
        if len != end - start + 1 {
            return Err(Error::new(
                ErrorCode::BlobUploadInvalid,
                format!(
                    "Content-Range {s} covers {} bytes but Content-Length is {len}",
                    end - start + 1
                ),
            )
            .into());
        }
    }
    Ok(Some(start))
}

fn body_stream(req: Request) -> berth_core::ByteStream {
    Box::pin(req.into_body().into_data_stream().map_err(std::io::Error::other))
}

fn range_header(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn upload_response(status: StatusCode, name: &RepoName, id: &UploadId, size: u64) -> Response {
    Response::builder()
        .status(status)
        .header(header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}"))
        .header(header::RANGE, range_header(size))
        .header(r::UPLOAD_UUID, id.as_str())
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}

/// A 416 on an upload also says where the upload stands, so the client can resume.
fn upload_error(name: &RepoName, id: &UploadId, e: Error) -> ApiError {
    let offset = e.detail.as_ref().and_then(|d| d.get("offset")).and_then(|o| o.as_u64());
    let mut api = ApiError::from(e);
    if let Some(size) = offset {
        api.headers
            .push((header::LOCATION, r::header(format!("/v2/{name}/blobs/uploads/{id}"))));
        api.headers.push((header::RANGE, r::header(range_header(size))));
        api.headers.push((r::UPLOAD_UUID, r::header(id.as_str())));
    }
    api
}

fn blob_created(name: &RepoName, d: &Digest) -> Response {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{name}/blobs/{d}"))
        .header(r::CONTENT_DIGEST, d.to_string())
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .expect("valid response")
}

async fn post_upload(st: &AppState, name: &RepoName, q: &HashMap<String, String>, req: Request) -> Result<Response> {
    let reg = &st.registry;
    if let (Some(mount), Some(from)) = (q.get("mount"), q.get("from")) {
        let d = digest(mount)?;
        let from: RepoName = from
            .parse()
            .map_err(|e: berth_oci::NameError| Error::new(ErrorCode::NameInvalid, e.to_string()))?;
        if reg.mount_blob(name, &from, &d).await? {
            return Ok(blob_created(name, &d));
        }
    }
    if let Some(d) = q.get("digest") {
        let d = digest(d)?;
        reg.put_blob(name, &d, body_stream(req)).await?;
        return Ok(blob_created(name, &d));
    }
    let id = reg.start_upload(name).await?;
    Ok(upload_response(StatusCode::ACCEPTED, name, &id, 0))
}

/// Parses a single `Range: bytes=...` against a blob of `size` bytes.
/// None: serve the whole blob (no header, or one berth does not honour).
fn parse_range(h: &HeaderMap, size: u64) -> std::result::Result<Option<(u64, u64)>, ()> {
    let Some(v) = h.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let Ok(start) = a.parse::<u64>() else {
            return Ok(None);
        };
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            match b.parse::<u64>() {
                Ok(e) => e.min(size.saturating_sub(1)),
                Err(_) => return Ok(None),
            }
        };
        if start >= size || end < start {
            return Err(());
        }
        (start, end)
    };
    Ok(Some(range))
}

async fn get_blob(st: &AppState, name: &RepoName, d: &Digest, method: &Method, h: &HeaderMap) -> Result<Response> {
    let reg = &st.registry;
    let size = reg.stat_blob(name, d).await?;
    if *method == Method::GET {
        if let Some(url) = reg.blob_redirect(d).await? {
            return Ok(Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header(header::LOCATION, url)
                .header(r::CONTENT_DIGEST, d.to_string())
                .body(Body::empty())
                .expect("valid response"));
        }
    }
    let range = match parse_range(h, size) {
        Ok(r) => r,
        Err(()) => {
            let mut resp = ApiError::from(Error::code(ErrorCode::RangeInvalid)).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_RANGE, r::header(format!("bytes */{size}")));
            return Ok(resp);
        }
    };
    let mut b = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(r::CONTENT_DIGEST, d.to_string())
        .header(header::ETAG, format!("\"{d}\""))
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "max-age=31536000");
    let (status, len) = match range {
        Some((s, e)) => {
            b = b.header(header::CONTENT_RANGE, format!("bytes {s}-{e}/{size}"));
            (StatusCode::PARTIAL_CONTENT, e - s + 1)
        }
        None => (StatusCode::OK, size),
    };
    b = b.status(status).header(header::CONTENT_LENGTH, len);
    if *method == Method::HEAD {
        return Ok(b.body(Body::empty()).expect("valid response"));
    }
    let read = reg.get_blob(name, d, range).await?;
    Ok(b.body(Body::from_stream(read.stream)).expect("valid response"))
}

/// A blob a proxy cache project lacks, from upstream (stored on the way).
async fn proxied_blob(
    p: &berth_core::proxy::ProxyCache,
    up: &std::sync::Arc<berth_core::proxy::Upstream>,
    name: &RepoName,
    d: &Digest,
    method: &Method,
) -> Result<Response> {
    let (size, stream) = p.blob(up, name, d, *method == Method::GET).await?;
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(r::CONTENT_DIGEST, d.to_string())
        .header(header::ETAG, format!("\"{d}\""));
    if size > 0 {
        b = b.header(header::CONTENT_LENGTH, size);
    }
    let body = match stream {
        Some(s) => Body::from_stream(s),
        None => Body::empty(),
    };
    Ok(b.body(body).expect("valid response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(range: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::RANGE, range.parse().unwrap());
        m
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(&HeaderMap::new(), 10), Ok(None));
        assert_eq!(parse_range(&h("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(&h("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(&h("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(&h("bytes=-30"), 10), Ok(Some((0, 9))));
        assert_eq!(parse_range(&h("bytes=8-100"), 10), Ok(Some((8, 9))));
        assert_eq!(parse_range(&h("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(&h("bytes=5-4"), 10), Err(()));
        assert_eq!(parse_range(&h("bytes=0-1,3-4"), 10), Ok(None));
        assert_eq!(parse_range(&h("items=0-1"), 10), Ok(None));
    }

    #[test]
    fn content_ranges() {
        let mut m = HeaderMap::new();
        assert_eq!(content_range_start(&m).unwrap(), None);
        m.insert(header::CONTENT_RANGE, "10-19".parse().unwrap());
        assert_eq!(content_range_start(&m).unwrap(), Some(10));
        m.insert(header::CONTENT_LENGTH, "5".parse().unwrap());
        assert_eq!(
            content_range_start(&m).unwrap_err().err.code,
            ErrorCode::BlobUploadInvalid
        );
        m.insert(header::CONTENT_RANGE, "x".parse().unwrap());
        assert!(content_range_start(&m).is_err());
    }
}
