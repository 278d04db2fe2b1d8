//! Blobs in an S3-compatible bucket, through the `object_store` crate.
//!
//! Layout under the configured prefix:
//!   blobs/<algorithm>/<first two hex>/<hex>     committed blobs
//!   uploads/<id>/start                          an upload exists (empty marker)
//!   uploads/<id>/<offset, 20 digits>            the bytes one append wrote
//!
//! S3 cannot append, so each append is an object of its own, named by the
//! offset it starts at; the upload's length is the sum of its parts. A part
//! appears whole or not at all (a single PUT, or a multipart upload that is
//! completed only after the body ended well), so a failed append leaves the
//! upload as it was. Commit copies a single part into place on the server,
//! or streams several through one multipart upload; either way the blob key
//! appears atomically. Memory per transfer is bounded by the part size.

use std::time::{Duration, SystemTime};

use berth_oci::{Digest, UploadId};
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::{BlobReader, BlobStore, ByteStream, Result, StorageError};

/// Bytes sent per S3 part; appends smaller than this are one PUT.
const PART_SIZE: usize = 8 << 20;
/// Parts in flight per transfer. Memory per transfer is about
/// `PART_SIZE * (PARTS_IN_FLIGHT + 1)`.
const PARTS_IN_FLIGHT: usize = 2;
/// S3's limit for a server-side copy in one request.
const MAX_SINGLE_COPY: u64 = 5 << 30;

/// Where and how to reach the bucket.
#[derive(Clone, Debug, Default)]
pub struct S3Config {
    pub bucket: String,
    /// `https://s3.example.com`, or empty for AWS's endpoint of `region`.
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Key prefix inside the bucket, without leading or trailing slash.
    pub prefix: String,
    /// When set, blob GETs answer with a redirect to a presigned URL valid this long.
    pub redirect: Option<Duration>,
}

pub struct S3Store {
    store: AmazonS3,
    cfg: S3Config,
}

fn io_err(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::NotFound { .. } => StorageError::NotFound,
        e => StorageError::Io(std::io::Error::other(e)),
    }
}

impl S3Store {
    pub fn new(cfg: S3Config) -> std::result::Result<S3Store, String> {
        if cfg.bucket.is_empty() {
            return Err("the S3 backend needs a bucket".into());
        }
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(if cfg.region.is_empty() {
                "us-east-1"
            } else {
                &cfg.region
            })
            .with_disable_tagging(true)
            .with_retry(object_store::RetryConfig {
                max_retries: 4,
                retry_timeout: Duration::from_secs(30),
                ..Default::default()
            });
        if !cfg.access_key.is_empty() {
            b = b
                .with_access_key_id(&cfg.access_key)
                .with_secret_access_key(&cfg.secret_key);
        }
        if !cfg.endpoint.is_empty() {
            b = b
                .with_endpoint(&cfg.endpoint)
                .with_allow_http(cfg.endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        let store = b.build().map_err(|e| e.to_string())?;
        Ok(S3Store { store, cfg })
    }

    /// Writes, reads back and removes a small object: fails, saying why,
    /// when the bucket is missing or the credentials do not allow writing.
    pub async fn probe(&self) -> std::result::Result<(), String> {
        let key = self.key("_berth/probe");
        let body = Bytes::from(format!("written by berth at {:?}", SystemTime::now()));
        let say = |what: &str, e: object_store::Error| format!("cannot {what} in bucket {}: {e}", self.cfg.bucket);
        self.store
            .put(&key, PutPayload::from_bytes(body.clone()))
            .await
            .map_err(|e| say("write", e))?;
        let got = self.store.get(&key).await.map_err(|e| say("read", e))?;
        let got = got.bytes().await.map_err(|e| say("read", e))?;
        if got != body {
            return Err(format!(
                "bucket {} returned other bytes than were written",
                self.cfg.bucket
            ));
        }
        self.store.delete(&key).await.map_err(|e| say("delete", e))?;
        Ok(())
    }

    fn key(&self, rest: &str) -> Path {
        if self.cfg.prefix.is_empty() {
            Path::from(rest)
        } else {
            Path::from(format!("{}/{rest}", self.cfg.prefix.trim_matches('/')))
        }
    }

    fn blob_key(&self, d: &Digest) -> Path {
        let hex = d.hex();
        self.key(&format!("blobs/{}/{}/{hex}", d.algorithm().as_str(), &hex[..2]))
    }

    fn trash_key(&self, d: &Digest) -> Path {
        self.key(&format!("trash/{}-{}", d.algorithm().as_str(), d.hex()))
    }

    fn upload_dir(&self, id: &UploadId) -> Path {
        self.key(&format!("uploads/{id}"))
    }

    /// The parts of an upload in order: (start offset, key, size). NotFound
    /// when the upload's marker is missing.
    async fn parts(&self, id: &UploadId) -> Result<Vec<(u64, Path, u64)>> {
        let dir = self.upload_dir(id);
        let mut started = false;
        let mut parts = Vec::new();
        let mut list = self.store.list(Some(&dir));
        while let Some(m) = list.next().await {
            let m = m.map_err(io_err)?;
            match m.location.filename() {
                Some("start") => started = true,
                Some(name) => {
                    if let Ok(offset) = name.parse::<u64>() {
                        parts.push((offset, m.location.clone(), m.size));
                    }
                }
                None => {}
            }
        }
        if !started {
            return Err(StorageError::NotFound);
        }
        parts.sort_by_key(|p| p.0);
        Ok(parts)
    }

    /// Writes `body` to `key` as one object: a PUT when it is small, else a
    /// multipart upload that is completed only if the body ends without error.
    async fn write_stream(&self, key: &Path, mut body: ByteStream) -> Result<u64> {
        let mut first = BytesMut::new();
        while first.len() < PART_SIZE {
            match body.next().await {
                Some(chunk) => first.extend_from_slice(&chunk.map_err(StorageError::Body)?),
                None => {
                    let n = first.len() as u64;
                    if n > 0 {
                        self.store
                            .put(key, PutPayload::from_bytes(first.freeze()))
                            .await
                            .map_err(io_err)?;
                    }
                    return Ok(n);
                }
            }
        }
        let upload = self.store.put_multipart(key).await.map_err(io_err)?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut n = first.len() as u64;
        w.put(first.freeze());
        let r: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(StorageError::Body)?;
                n += chunk.len() as u64;
                w.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(io_err)?;
                w.put(chunk);
            }
            Ok(())
        }
        .await;
        match r {
            Ok(()) => {
                w.finish().await.map_err(io_err)?;
                Ok(n)
            }
            Err(e) => {
                if let Err(abort) = w.abort().await {
                    tracing::warn!(error = %abort, key = %key, "aborting a multipart upload failed");
                }
                Err(e)
            }
        }
    }

    fn read_stream(&self, key: Path) -> ByteStream {
        let store = self.store.clone();
        let s = futures_util::stream::once(async move { store.get(&key).await })
            .map_ok(|r| r.into_stream())
            .try_flatten()
            .map_err(std::io::Error::other);
        Box::pin(s)
    }
}

#[async_trait::async_trait]
impl BlobStore for S3Store {
    async fn stat(&self, digest: &Digest) -> Result<u64> {
        Ok(self.store.head(&self.blob_key(digest)).await.map_err(io_err)?.size)
    }

    async fn get(&self, digest: &Digest, range: Option<(u64, u64)>) -> Result<BlobReader> {
        let key = self.blob_key(digest);
        if let Some((start, end)) = range {
            if start > end {
                return Err(StorageError::RangeNotSatisfiable);
            }
            let size = self.stat(digest).await?;
            if end >= size {
                return Err(StorageError::RangeNotSatisfiable);
            }
            let opts = GetOptions {
                range: Some(GetRange::Bounded(start..end + 1)),
                ..Default::default()
            };
            let r = self.store.get_opts(&key, opts).await.map_err(io_err)?;
            return Ok(BlobReader {
                size,
                stream: Box::pin(r.into_stream().map_err(std::io::Error::other)),
            });
        }
        let r = self.store.get(&key).await.map_err(io_err)?;
        Ok(BlobReader {
            size: r.meta.size,
            stream: Box::pin(r.into_stream().map_err(std::io::Error::other)),
        })
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        self.store
            .put(&self.blob_key(digest), PutPayload::from_bytes(bytes))
            .await
            .map_err(io_err)?;
        Ok(())
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        match self.store.delete(&self.blob_key(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }

    // S3 has no rename: a trash move is a server-side copy and a delete.
    async fn trash(&self, digest: &Digest) -> Result<bool> {
        match self.store.copy(&self.blob_key(digest), &self.trash_key(digest)).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(io_err(e)),
        }
        self.delete(digest).await?;
        Ok(true)
    }

    async fn restore(&self, digest: &Digest) -> Result<bool> {
        match self.store.copy(&self.trash_key(digest), &self.blob_key(digest)).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(io_err(e)),
        }
        self.purge(digest).await?;
        Ok(true)
    }

    async fn purge(&self, digest: &Digest) -> Result<()> {
        match self.store.delete(&self.trash_key(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_err(e)),
        }
    }

    async fn trashed(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        let mut list = self.store.list(Some(&self.key("trash")));
        while let Some(m) = list.next().await {
            let m = m.map_err(io_err)?;
            if let Some(name) = m.location.filename() {
                if let Ok(d) = name.replacen('-', ":", 1).parse::<Digest>() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    async fn upload_create(&self, id: &UploadId) -> Result<()> {
        let marker = self.upload_dir(id).join("start");
        self.store.put(&marker, PutPayload::new()).await.map_err(io_err)?;
        Ok(())
    }

    async fn upload_append(&self, id: &UploadId, offset: u64, body: ByteStream) -> Result<u64> {
        let parts = self.parts(id).await?;
        let size: u64 = parts.iter().map(|p| p.2).sum();
        if size != offset {
            return Err(StorageError::OffsetMismatch {
                expected: offset,
                actual: size,
            });
        }
        let key = self.upload_dir(id).join(format!("{offset:020}").as_str());
        let n = self.write_stream(&key, body).await?;
        Ok(offset + n)
    }

    async fn upload_size(&self, id: &UploadId) -> Result<u64> {
        Ok(self.parts(id).await?.iter().map(|p| p.2).sum())
    }

    async fn upload_read(&self, id: &UploadId) -> Result<ByteStream> {
        let parts = self.parts(id).await?;
        let streams: Vec<ByteStream> = parts.into_iter().map(|(_, k, _)| self.read_stream(k)).collect();
        Ok(Box::pin(futures_util::stream::iter(streams).flatten()))
    }

    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> Result<()> {
        let parts = self.parts(id).await?;
        let to = self.blob_key(digest);
        match parts.as_slice() {
            [] => {
                self.store.put(&to, PutPayload::new()).await.map_err(io_err)?;
            }
            [(_, from, size)] if *size <= MAX_SINGLE_COPY => {
                self.store.copy(from, &to).await.map_err(io_err)?;
            }
            _ => {
                let body = self.upload_read(id).await?;
                self.write_stream(&to, body).await.map_err(|e| match e {
                    StorageError::Body(e) => StorageError::Io(e),
                    e => e,
                })?;
            }
        }
        self.upload_cancel(id).await
    }

    async fn upload_cancel(&self, id: &UploadId) -> Result<()> {
        let dir = self.upload_dir(id);
        let keys: Vec<Path> = self
            .store
            .list(Some(&dir))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(io_err)?;
        // The marker goes last, so that an interrupted cancel still lists.
        let (markers, data): (Vec<Path>, Vec<Path>) = keys.into_iter().partition(|k| k.filename() == Some("start"));
        for k in data.into_iter().chain(markers) {
            match self.store.delete(&k).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        Ok(())
    }

    async fn upload_list(&self) -> Result<Vec<(UploadId, SystemTime)>> {
        let mut latest: std::collections::HashMap<String, SystemTime> = Default::default();
        let mut list = self.store.list(Some(&self.key("uploads")));
        while let Some(m) = list.next().await {
            let m = m.map_err(io_err)?;
            let parts: Vec<_> = m.location.parts().collect();
            if parts.len() < 2 {
                continue;
            }
            let id = parts[parts.len() - 2].as_ref().to_string();
            let t = SystemTime::from(m.last_modified);
            let e = latest.entry(id).or_insert(t);
            if t > *e {
                *e = t;
            }
        }
        Ok(latest
            .into_iter()
            .filter_map(|(id, t)| Some((id.parse::<UploadId>().ok()?, t)))
            .collect())
    }

    async fn redirect_url(&self, digest: &Digest) -> Result<Option<String>> {
        let Some(valid) = self.cfg.redirect else {
            return Ok(None);
        };
        let url = self
            .store
            .signed_url(reqwest::Method::GET, &self.blob_key(digest), valid)
            .await
            .map_err(io_err)?;
        Ok(Some(url.to_string()))
    }

    fn describe(&self) -> String {
        let at = if self.cfg.endpoint.is_empty() {
            format!("AWS region {}", self.cfg.region)
        } else {
            self.cfg.endpoint.clone()
        };
        let prefix = if self.cfg.prefix.is_empty() {
            String::new()
        } else {
            format!(", prefix {}", self.cfg.prefix)
        };
        format!("S3 bucket {} at {at}{prefix}", self.cfg.bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testsuite::{collect, S3Server};

    fn stream_of(data: Vec<u8>, piece: usize) -> ByteStream {
        let chunks: Vec<std::io::Result<Bytes>> = data.chunks(piece).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        Box::pin(futures_util::stream::iter(chunks))
    }

    #[tokio::test]
    async fn passes_the_backend_suite_on_a_real_s3_server() {
        let dir = tempfile::tempdir().unwrap();
        let Some(server) = S3Server::start(dir.path(), "berth") else {
            return;
        };
        let store = S3Store::new(server.config("berth", "suite")).unwrap();
        crate::testsuite::run(&store).await;
    }

    /// Appends larger than a part go through multipart uploads; a commit of
    /// several appends streams them into one object; presigned URLs fetch.
    #[tokio::test]
    async fn large_and_chunked_uploads_and_presigned_urls() {
        let dir = tempfile::tempdir().unwrap();
        let Some(server) = S3Server::start(dir.path(), "berth") else {
            return;
        };
        let mut cfg = server.config("berth", "");
        cfg.redirect = Some(Duration::from_secs(60));
        let store = S3Store::new(cfg).unwrap();
        let data: Vec<u8> = (0..(PART_SIZE * 2 + 12345)).map(|i| (i * 31 % 251) as u8).collect();
        let d = Digest::sha256_of(&data);
        let id = UploadId::from_random([7; 16]);
        store.upload_create(&id).await.unwrap();
        let half = data.len() / 2;
        let n = store
            .upload_append(&id, 0, stream_of(data[..half].to_vec(), 100_000))
            .await
            .unwrap();
        assert_eq!(n, half as u64);
        let n = store
            .upload_append(&id, n, stream_of(data[half..].to_vec(), 65_536))
            .await
            .unwrap();
        assert_eq!(n, data.len() as u64);
        // A body that breaks after several parts leaves the upload as it was.
        let mut broken: Vec<std::io::Result<Bytes>> = vec![Ok(Bytes::from(vec![1u8; PART_SIZE * 2]))];
        broken.push(Err(std::io::Error::other("client went away")));
        let r = store
            .upload_append(&id, n, Box::pin(futures_util::stream::iter(broken)))
            .await;
        assert!(matches!(r, Err(StorageError::Body(_))), "{:?}", r.map(|_| ()));
        assert_eq!(store.upload_size(&id).await.unwrap(), data.len() as u64);
        store.upload_commit(&id, &d).await.unwrap();
        assert_eq!(store.stat(&d).await.unwrap(), data.len() as u64);
        let got = collect(store.get(&d, None).await.unwrap().stream).await;
        assert!(got == data, "stored bytes differ");
        let got = collect(
            store
                .get(&d, Some((PART_SIZE as u64 - 5, PART_SIZE as u64 + 4)))
                .await
                .unwrap()
                .stream,
        )
        .await;
        assert_eq!(got, &data[PART_SIZE - 5..PART_SIZE + 5]);
        // Nothing of the upload is left behind.
        assert!(store.upload_list().await.unwrap().is_empty());

        let url = store.redirect_url(&d).await.unwrap().expect("a presigned URL");
        let body = reqwest::get(&url).await.unwrap();
        assert_eq!(body.status(), 200, "{url}");
        assert!(body.bytes().await.unwrap() == data);
        // Objects are where the layout says.
        let on_disk = server.root.join("berth/blobs/sha256").join(&d.hex()[..2]).join(d.hex());
        assert_eq!(std::fs::metadata(on_disk).unwrap().len(), data.len() as u64);
    }
}
