//! Blob storage behind one small, streaming trait.
//!
//! Layering: http calls core; core calls db and storage; nothing calls up.
//! This crate knows digests and upload ids, never repositories or manifests.
//!
//! Every backend passes the suite in [`testsuite`] (run it from the backend's
//! tests). The in-memory backend exists only behind the `testing` feature:
//! a server cannot be configured to keep image data in memory.

use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use berth_oci::{Digest, UploadId};
use bytes::Bytes;
use futures_util::Stream;

mod fs;
#[cfg(feature = "testing")]
mod memory;
mod s3;
#[cfg(feature = "testing")]
pub mod testsuite;

pub use fs::FsStore;
#[cfg(feature = "testing")]
pub use memory::MemoryStore;
pub use s3::{S3Config, S3Store};

/// A stream of bytes: the body of a request or of a stored blob.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("not found")]
    NotFound,
    /// An append did not start where the upload ends.
    #[error("upload is at offset {actual}, not {expected}")]
    OffsetMismatch { expected: u64, actual: u64 },
    #[error("requested range is outside the blob")]
    RangeNotSatisfiable,
    /// The client's body stream failed (disconnect, timeout).
    #[error("reading the request body: {0}")]
    Body(io::Error),
    #[error("storage I/O: {0}")]
    Io(#[from] io::Error),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// An open blob: its total size and the bytes of the requested range.
pub struct BlobReader {
    pub size: u64,
    pub stream: ByteStream,
}

#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Size of a committed blob.
    async fn stat(&self, digest: &Digest) -> Result<u64>;

    /// Reads a committed blob, or the inclusive byte range `start..=end` of it.
    async fn get(&self, digest: &Digest, range: Option<(u64, u64)>) -> Result<BlobReader>;

    /// Stores a small object whose digest the caller has verified (a manifest).
    /// Durable when this returns.
    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<()>;

    /// Removes a committed blob. Removing an absent one is not an error.
    async fn delete(&self, digest: &Digest) -> Result<()>;

    /// Starts an empty upload.
    async fn upload_create(&self, id: &UploadId) -> Result<()>;

    /// Appends `body` to an upload that must currently be `offset` bytes long.
    /// Returns the new length; the appended bytes are durable when it returns.
    async fn upload_append(&self, id: &UploadId, offset: u64, body: ByteStream) -> Result<u64>;

    /// Current length of an upload.
    async fn upload_size(&self, id: &UploadId) -> Result<u64>;

    /// Reads an upload from the start (to hash it when no running hash survived).
    async fn upload_read(&self, id: &UploadId) -> Result<ByteStream>;

    /// Moves a verified upload into place as `digest`, atomically and durably.
    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> Result<()>;

    /// Drops an upload. Dropping an absent one is not an error.
    async fn upload_cancel(&self, id: &UploadId) -> Result<()>;

    /// All uploads with the time they were last written, for purging abandoned ones.
    async fn upload_list(&self) -> Result<Vec<(UploadId, SystemTime)>>;

    /// Moves a committed blob aside, as the step of a removal that may still
    /// be undone (garbage collection does it before its deletion commits).
    /// False if there was no such blob.
    async fn trash(&self, digest: &Digest) -> Result<bool>;

    /// Puts a trashed blob back. If the blob was stored again meanwhile, the
    /// trashed copy (the same bytes) is dropped. False if none was trashed.
    async fn restore(&self, digest: &Digest) -> Result<bool>;

    /// Deletes a trashed blob for good. Absent is not an error.
    async fn purge(&self, digest: &Digest) -> Result<()>;

    /// Blobs in the trash: left there by a removal that was interrupted.
    async fn trashed(&self) -> Result<Vec<Digest>>;

    /// Where a client may fetch the blob directly, for backends that can serve it.
    async fn redirect_url(&self, _digest: &Digest) -> Result<Option<String>> {
        Ok(None)
    }

    /// Human-readable description of where data lives, for `berth config check`.
    fn describe(&self) -> String;
}
