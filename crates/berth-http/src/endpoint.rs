//! Every `/v2/...` path parsed once into an [`Endpoint`]. Repository names
//! contain slashes, so the path is read from its end: the last segments say
//! what is asked for, everything before them is the name.

use berth_core::{Error, ErrorCode};
use berth_oci::{Digest, Reference, RepoName, UploadId};

#[derive(Clone, Debug, PartialEq)]
pub enum Endpoint {
    Base,
    Catalog,
    Tags { name: RepoName },
    Manifest { name: RepoName, reference: Reference },
    Blob { name: RepoName, digest: Digest },
    Uploads { name: RepoName },
    Upload { name: RepoName, id: UploadId },
    Referrers { name: RepoName, digest: Digest },
}

fn name(segments: &[&str]) -> Result<RepoName, Error> {
    let joined = segments.join("/");
    joined
        .parse()
        .map_err(|e: berth_oci::NameError| Error::new(ErrorCode::NameInvalid, e.to_string()))
}

pub(crate) fn digest(s: &str) -> Result<Digest, Error> {
    s.parse()
        .map_err(|e: berth_oci::DigestError| Error::new(ErrorCode::DigestInvalid, e.to_string()))
}

impl Endpoint {
    /// The repository the endpoint is about, if any.
    pub fn name(&self) -> Option<&RepoName> {
        match self {
            Endpoint::Base | Endpoint::Catalog => None,
            Endpoint::Tags { name }
            | Endpoint::Manifest { name, .. }
            | Endpoint::Blob { name, .. }
            | Endpoint::Uploads { name }
            | Endpoint::Upload { name, .. }
            | Endpoint::Referrers { name, .. } => Some(name),
        }
    }

    /// Parses the path after `/v2/`. None: no such endpoint (404).
    pub fn parse(rest: &str) -> Option<Result<Endpoint, Error>> {
        if rest.is_empty() {
            return Some(Ok(Endpoint::Base));
        }
        if rest == "_catalog" {
            return Some(Ok(Endpoint::Catalog));
        }
        let s: Vec<&str> = rest.split('/').collect();
        let n = s.len();
        let tail = |k: usize| if n > k { Some(&s[..n - k]) } else { None };
        if n >= 3 && s[n - 2] == "tags" && s[n - 1] == "list" {
            tail(2).map(|p| name(p).map(|name| Endpoint::Tags { name }))
        } else if n >= 2 && s[n - 2] == "manifests" {
            tail(2).map(|p| {
                let name = name(p)?;
                let reference = s[n - 1]
                    .parse::<Reference>()
                    .map_err(|e| Error::new(ErrorCode::ManifestInvalid, e.to_string()))?;
                Ok(Endpoint::Manifest { name, reference })
            })
        } else if n >= 3 && s[n - 2] == "blobs" && s[n - 1] == "uploads" {
            tail(2).map(|p| name(p).map(|name| Endpoint::Uploads { name }))
        } else if n >= 4 && s[n - 3] == "blobs" && s[n - 2] == "uploads" {
            tail(3).map(|p| {
                let name = name(p)?;
                if s[n - 1].is_empty() {
                    return Ok(Endpoint::Uploads { name });
                }
                let id = s[n - 1]
                    .parse::<UploadId>()
                    .map_err(|e| Error::new(ErrorCode::BlobUploadUnknown, e.to_string()))?;
                Ok(Endpoint::Upload { name, id })
            })
        } else if n >= 2 && s[n - 2] == "blobs" {
            tail(2).map(|p| {
                Ok(Endpoint::Blob {
                    name: name(p)?,
                    digest: digest(s[n - 1])?,
                })
            })
        } else if n >= 2 && s[n - 2] == "referrers" {
            tail(2).map(|p| {
                Ok(Endpoint::Referrers {
                    name: name(p)?,
                    digest: digest(s[n - 1])?,
                })
            })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> Endpoint {
        Endpoint::parse(p).unwrap().unwrap()
    }

    #[test]
    fn parses_every_endpoint() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(ok(""), Endpoint::Base);
        assert_eq!(ok("_catalog"), Endpoint::Catalog);
        assert!(matches!(ok("a/b/c/tags/list"), Endpoint::Tags { name } if name.as_str() == "a/b/c"));
        assert!(matches!(ok("a/manifests/latest"), Endpoint::Manifest { name, .. } if name.as_str() == "a"));
        assert!(
            matches!(ok(&format!("a/b/manifests/{d}")), Endpoint::Manifest { reference: Reference::Digest(x), .. } if x == d)
        );
        assert!(matches!(ok(&format!("a/blobs/{d}")), Endpoint::Blob { digest, .. } if digest == d));
        assert!(matches!(ok("a/b/blobs/uploads/"), Endpoint::Uploads { name } if name.as_str() == "a/b"));
        assert!(matches!(ok("a/b/blobs/uploads"), Endpoint::Uploads { .. }));
        let id = UploadId::from_random([1; 16]);
        assert!(matches!(ok(&format!("a/blobs/uploads/{id}")), Endpoint::Upload { id: x, .. } if x == id));
        assert!(matches!(ok(&format!("x/referrers/{d}")), Endpoint::Referrers { .. }));
        // A repository may itself be called "tags", "blobs" or "manifests".
        assert!(matches!(ok("tags/tags/list"), Endpoint::Tags { name } if name.as_str() == "tags"));
        assert!(matches!(ok("blobs/manifests/v1"), Endpoint::Manifest { name, .. } if name.as_str() == "blobs"));
    }

    #[test]
    fn reports_bad_parts() {
        let err = |p: &str| Endpoint::parse(p).unwrap().unwrap_err().code;
        assert_eq!(err("UPPER/manifests/x"), ErrorCode::NameInvalid);
        assert_eq!(err("a/manifests/-bad"), ErrorCode::ManifestInvalid);
        assert_eq!(err("a/blobs/sha256:zz"), ErrorCode::DigestInvalid);
        assert_eq!(err("a/blobs/uploads/nothex"), ErrorCode::BlobUploadUnknown);
        assert!(Endpoint::parse("a/b/c").is_none());
        assert!(Endpoint::parse("a/blobs/uploads/../../x").is_none());
        assert!(Endpoint::parse("manifests/x").is_none());
    }
}
