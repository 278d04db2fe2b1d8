//! Manifest parsing and validation. A manifest is stored byte-exact; this
//! module only reads what the registry needs from it: its kind, the blobs and
//! child manifests it references, its subject and its artifact type.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::Digest;

pub mod media_types {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

    /// Every manifest media type berth stores and serves.
    pub const SUPPORTED: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST];

    pub fn is_supported(mt: &str) -> bool {
        SUPPORTED.contains(&mt)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(String),
    #[error("manifest media type {0:?} is not supported (supported: OCI image manifest and index, Docker schema 2 manifest and manifest list)")]
    UnsupportedMediaType(String),
    #[error("Content-Type {header:?} does not match the manifest's mediaType {body:?}")]
    MediaTypeMismatch { header: String, body: String },
    #[error("schemaVersion must be 2, found {0}")]
    SchemaVersion(i64),
    #[error("manifest field {0}: {1}")]
    Field(&'static str, String),
}

/// An OCI content descriptor, as much of it as berth uses.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image manifest: a config blob and layer blobs.
    Image,
    /// An index or manifest list: child manifests.
    Index,
}

/// Something a manifest points at that must exist before the manifest is accepted.
#[derive(Clone, Debug, PartialEq)]
pub enum Reference {
    Blob(Descriptor),
    Manifest(Descriptor),
}

#[derive(Clone, Debug)]
pub struct ParsedManifest {
    pub media_type: String,
    pub kind: ManifestKind,
    pub references: Vec<Reference>,
    pub subject: Option<Descriptor>,
    /// `artifactType`, or for an image manifest without one, its config's media type
    /// (what the referrers API reports).
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// Strips parameters (`; charset=...`) and whitespace from a Content-Type value.
fn essence(ct: &str) -> &str {
    ct.split(';').next().unwrap_or("").trim()
}

impl ParsedManifest {
    /// Parses a manifest body. `content_type` is the request's Content-Type, if any.
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<ParsedManifest, ManifestError> {
        let raw: Raw = serde_json::from_slice(body).map_err(|e| ManifestError::Json(e.to_string()))?;
        let header = content_type
            .map(essence)
            .filter(|ct| !ct.is_empty() && *ct != "application/json" && *ct != "application/octet-stream");
        let media_type = match (header, raw.media_type.as_deref()) {
            (Some(h), Some(b)) if h != b => {
                return Err(ManifestError::MediaTypeMismatch {
                    header: h.to_string(),
                    body: b.to_string(),
                })
            }
            (Some(h), _) => h.to_string(),
            (None, Some(b)) => b.to_string(),
            (None, None) if raw.manifests.is_some() => media_types::OCI_INDEX.to_string(),
            (None, None) => media_types::OCI_MANIFEST.to_string(),
        };
        if media_type == media_types::DOCKER_SCHEMA1 || media_type == media_types::DOCKER_SCHEMA1_SIGNED {
            return Err(ManifestError::UnsupportedMediaType(format!(
                "{media_type} (Docker schema 1 is deprecated; push with a current client)"
            )));
        }
        if !media_types::is_supported(&media_type) {
            return Err(ManifestError::UnsupportedMediaType(media_type));
        }
        match raw.schema_version {
            Some(2) => {}
            Some(v) => return Err(ManifestError::SchemaVersion(v)),
            None => return Err(ManifestError::Field("schemaVersion", "missing".into())),
        }
        let kind = if media_type == media_types::OCI_INDEX || media_type == media_types::DOCKER_MANIFEST_LIST {
            ManifestKind::Index
        } else {
            ManifestKind::Image
        };
        let mut references = Vec::new();
        let mut artifact_type = raw.artifact_type.clone();
        match kind {
            ManifestKind::Image => {
                if raw.manifests.is_some() {
                    return Err(ManifestError::Field(
                        "manifests",
                        "not allowed in an image manifest".into(),
                    ));
                }
                let config = raw
                    .config
                    .ok_or_else(|| ManifestError::Field("config", "missing".into()))?;
                check_size("config", &config)?;
                if artifact_type.is_none() {
                    artifact_type = Some(config.media_type.clone());
                }
                references.push(Reference::Blob(config));
                for layer in raw.layers.unwrap_or_default() {
                    check_size("layers", &layer)?;
                    // Foreign layers live elsewhere (their `urls`); they need not be here.
                    if layer.urls.as_ref().is_some_and(|u| !u.is_empty()) {
                        continue;
                    }
                    references.push(Reference::Blob(layer));
                }
            }
            ManifestKind::Index => {
                if raw.config.is_some() || raw.layers.is_some() {
                    return Err(ManifestError::Field(
                        "config",
                        "config and layers are not allowed in an index".into(),
                    ));
                }
                let manifests = raw
                    .manifests
                    .ok_or_else(|| ManifestError::Field("manifests", "missing".into()))?;
                for m in manifests {
                    check_size("manifests", &m)?;
                    references.push(Reference::Manifest(m));
                }
            }
        }
        if let Some(s) = &raw.subject {
            check_size("subject", s)?;
        }
        Ok(ParsedManifest {
            media_type,
            kind,
            references,
            subject: raw.subject,
            artifact_type,
            annotations: raw.annotations,
        })
    }
}

fn check_size(field: &'static str, d: &Descriptor) -> Result<(), ManifestError> {
    if d.size < 0 {
        return Err(ManifestError::Field(field, format!("negative size for {}", d.digest)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        Digest::sha256_of(&[n]).to_string()
    }

    #[test]
    fn image_manifest_with_subject() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","artifactType":"application/x.sig",
            "config":{{"mediaType":"{}","digest":"{}","size":2}},
            "layers":[{{"mediaType":"a","digest":"{}","size":5}},
                      {{"mediaType":"foreign","digest":"{}","size":5,"urls":["http://x"]}}],
            "subject":{{"mediaType":"{}","digest":"{}","size":10}},
            "annotations":{{"k":"v"}}}}"#,
            media_types::OCI_MANIFEST,
            media_types::OCI_EMPTY,
            d(1),
            d(2),
            d(3),
            media_types::OCI_MANIFEST,
            d(4)
        );
        let m = ParsedManifest::parse(Some(media_types::OCI_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Image);
        assert_eq!(m.references.len(), 2, "foreign layer is skipped");
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.sig"));
        assert_eq!(m.subject.unwrap().digest.to_string(), d(4));
        assert_eq!(m.annotations.unwrap()["k"], "v");
    }

    #[test]
    fn artifact_type_falls_back_to_config_media_type() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/x.cfg","digest":"{}","size":2}},"layers":[]}}"#,
            d(1)
        );
        let m = ParsedManifest::parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.media_type, media_types::OCI_MANIFEST);
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.cfg"));
    }

    #[test]
    fn index() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":7}}]}}"#,
            media_types::DOCKER_MANIFEST_LIST,
            media_types::DOCKER_MANIFEST,
            d(1)
        );
        let m = ParsedManifest::parse(Some(media_types::DOCKER_MANIFEST_LIST), body.as_bytes()).unwrap();
        assert_eq!(m.kind, ManifestKind::Index);
        assert!(matches!(m.references[0], Reference::Manifest(_)));
    }

    #[test]
    fn errors() {
        assert!(matches!(ParsedManifest::parse(None, b"{"), Err(ManifestError::Json(_))));
        let mismatch = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[]}}"#,
            media_types::OCI_INDEX
        );
        assert!(matches!(
            ParsedManifest::parse(Some(media_types::OCI_MANIFEST), mismatch.as_bytes()),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        assert!(matches!(
            ParsedManifest::parse(Some(media_types::DOCKER_SCHEMA1_SIGNED), b"{}"),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        let v1 = r#"{"schemaVersion":1,"manifests":[]}"#;
        assert!(matches!(
            ParsedManifest::parse(None, v1.as_bytes()),
            Err(ManifestError::SchemaVersion(1))
        ));
        let no_config = r#"{"schemaVersion":2,"layers":[]}"#;
        assert!(matches!(
            ParsedManifest::parse(None, no_config.as_bytes()),
            Err(ManifestError::Field("config", _))
        ));
        let bad_digest = r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:00","size":1}}"#;
        assert!(matches!(
            ParsedManifest::parse(None, bad_digest.as_bytes()),
            Err(ManifestError::Json(_))
        ));
    }
}
