//! Pure types of the OCI distribution and image specifications.
//!
//! Layering: this crate does no I/O and depends on no other berth crate.
//! Everything is parsed at the edge into these newtypes; past the edge a
//! [`Digest`], a [`RepoName`] or a [`Tag`] is always valid.

mod digest;
mod errors;
mod manifest;
mod name;

pub use digest::{Algorithm, Digest, DigestError, Hasher};
pub use errors::ErrorCode;
pub use manifest::{media_types, Descriptor, ManifestError, ManifestKind, ParsedManifest, Reference as ManifestRef};
pub use name::{NameError, Reference, RepoName, Tag, UploadId};
