//! In-memory backend for tests. Compiled only with the `memory` feature,
//! which the server binary never enables.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use berth_oci::{Digest, UploadId};
use bytes::{Bytes, BytesMut};
use futures_util::{stream, StreamExt};

use crate::{BlobReader, BlobStore, ByteStream, Result, StorageError};

#[derive(Default)]
pub struct MemoryStore {
    blobs: Mutex<HashMap<Digest, Bytes>>,
    trash: Mutex<HashMap<Digest, Bytes>>,
    uploads: Mutex<HashMap<UploadId, (BytesMut, SystemTime)>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }
}

fn once(b: Bytes) -> ByteStream {
    Box::pin(stream::iter([Ok(b)]))
}

#[async_trait::async_trait]
impl BlobStore for MemoryStore {
    async fn stat(&self, digest: &Digest) -> Result<u64> {
        let blobs = self.blobs.lock().unwrap();
        blobs.get(digest).map(|b| b.len() as u64).ok_or(StorageError::NotFound)
    }

    async fn get(&self, digest: &Digest, range: Option<(u64, u64)>) -> Result<BlobReader> {
        let b = self
            .blobs
            .lock()
            .unwrap()
            .get(digest)
            .cloned()
            .ok_or(StorageError::NotFound)?;
        let size = b.len() as u64;
        let part = match range {
            None => b,
            Some((s, e)) if s <= e && e < size => b.slice(s as usize..=e as usize),
            Some(_) => return Err(StorageError::RangeNotSatisfiable),
        };
        Ok(BlobReader {
            size,
            stream: once(part),
        })
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        self.blobs.lock().unwrap().insert(digest.clone(), bytes);
        Ok(())
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        self.blobs.lock().unwrap().remove(digest);
        Ok(())
    }

    async fn trash(&self, digest: &Digest) -> Result<bool> {
        let Some(b) = self.blobs.lock().unwrap().remove(digest) else {
            return Ok(false);
        };
        self.trash.lock().unwrap().insert(digest.clone(), b);
        Ok(true)
    }

    async fn restore(&self, digest: &Digest) -> Result<bool> {
        let Some(b) = self.trash.lock().unwrap().remove(digest) else {
            return Ok(false);
        };
        self.blobs.lock().unwrap().entry(digest.clone()).or_insert(b);
        Ok(true)
    }

    async fn purge(&self, digest: &Digest) -> Result<()> {
        self.trash.lock().unwrap().remove(digest);
        Ok(())
    }

    async fn trashed(&self) -> Result<Vec<Digest>> {
        Ok(self.trash.lock().unwrap().keys().cloned().collect())
    }

    async fn upload_create(&self, id: &UploadId) -> Result<()> {
        self.uploads
            .lock()
            .unwrap()
            .insert(id.clone(), (BytesMut::new(), SystemTime::now()));
        Ok(())
    }

    async fn upload_append(&self, id: &UploadId, offset: u64, mut body: ByteStream) -> Result<u64> {
        let actual = self.upload_size(id).await?;
        if actual != offset {
            return Err(StorageError::OffsetMismatch {
                expected: offset,
                actual,
            });
        }
        let mut chunk = BytesMut::new();
        while let Some(part) = body.next().await {
            chunk.extend_from_slice(&part.map_err(StorageError::Body)?);
        }
        let mut uploads = self.uploads.lock().unwrap();
        let entry = uploads.get_mut(id).ok_or(StorageError::NotFound)?;
        entry.0.extend_from_slice(&chunk);
        entry.1 = SystemTime::now();
        Ok(entry.0.len() as u64)
    }

    async fn upload_size(&self, id: &UploadId) -> Result<u64> {
        let uploads = self.uploads.lock().unwrap();
        uploads.get(id).map(|u| u.0.len() as u64).ok_or(StorageError::NotFound)
    }

    async fn upload_read(&self, id: &UploadId) -> Result<ByteStream> {
        let uploads = self.uploads.lock().unwrap();
        let data = uploads.get(id).ok_or(StorageError::NotFound)?.0.clone().freeze();
        Ok(once(data))
    }

    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> Result<()> {
        let (data, _) = self.uploads.lock().unwrap().remove(id).ok_or(StorageError::NotFound)?;
        self.blobs.lock().unwrap().insert(digest.clone(), data.freeze());
        Ok(())
    }

    async fn upload_cancel(&self, id: &UploadId) -> Result<()> {
        self.uploads.lock().unwrap().remove(id);
        Ok(())
    }

    async fn upload_list(&self) -> Result<Vec<(UploadId, SystemTime)>> {
        let uploads = self.uploads.lock().unwrap();
        Ok(uploads.iter().map(|(k, v)| (k.clone(), v.1)).collect())
    }

    fn describe(&self) -> String {
        "memory (tests only; lost on exit)".into()
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn passes_the_backend_suite() {
        crate::testsuite::run(&super::MemoryStore::new()).await;
    }
}
