//! The filesystem backend. Safe on a local disk and on a mount shared by
//! several replicas: all state is in files, every publish is a rename.
//!
//! Layout under the root:
//!
//! ```text
//! <root>/
//! ├── blobs/
//! │   ├── sha256/
//! │   │   └── e3/
//! │   │       └── e3b0c442...b855      committed blob (layers, configs, manifests)
//! │   └── sha512/...
//! ├── uploads/
//! │   └── 6f1c...                       upload in progress, one file per session
//! └── tmp/
//!     └── <random>                      small object being written, renamed into blobs/
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use berth_oci::{Digest, UploadId};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::task::JoinHandle;

use crate::{BlobReader, BlobStore, ByteStream, Result, StorageError};

/// Size of the buffers between the network and the disk: large enough for
/// few system calls, small enough that memory per upload stays constant.
const IO_BUF: usize = 1 << 20;
const READ_BUF: usize = 256 << 10;

#[derive(Clone, Debug)]
pub struct FsStore {
    root: PathBuf,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("storage task failed: {e}")))?
}

fn not_found(e: io::Error) -> StorageError {
    if e.kind() == io::ErrorKind::NotFound {
        StorageError::NotFound
    } else {
        StorageError::Io(e)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and parents) if needed, syncing each parent whose entries changed.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

impl FsStore {
    /// Opens (creating if needed) a store rooted at `root`, and proves it is
    /// writable by writing, syncing and removing a probe file.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<FsStore> {
        let root = root.into();
        for sub in ["blobs", "uploads", "tmp"] {
            ensure_dir(&root.join(sub))
                .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", root.join(sub).display())))?;
        }
        let probe = root
            .join("tmp")
            .join(format!(".probe-{}", uuid::Uuid::new_v4().simple()));
        let write = || -> io::Result<()> {
            let mut f = File::create(&probe)?;
            f.write_all(b"berth")?;
            f.sync_all()?;
            fs::remove_file(&probe)
        };
        write().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("storage path {} is not writable: {e}", root.display()),
            )
        })?;
        Ok(FsStore { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    fn upload_path(&self, id: &UploadId) -> PathBuf {
        self.root.join("uploads").join(id.as_str())
    }

    /// Renames `from` onto the blob's path and makes the rename durable.
    fn publish(&self, from: &Path, d: &Digest) -> io::Result<()> {
        let to = self.blob_path(d);
        let dir = to.parent().expect("blob path has a parent");
        ensure_dir(dir)?;
        fs::rename(from, &to)?;
        sync_dir(dir)
    }
}

/// A disk write in progress: it hands back the file and the spent buffer.
type Inflight = Option<JoinHandle<io::Result<(File, Vec<u8>)>>>;

/// Writes a body stream to `file`, double-buffered so that the network and
/// the disk work at the same time. Returns the file and the bytes written.
async fn pump(file: File, mut body: ByteStream) -> Result<(File, u64)> {
    let mut file = Some(file);
    let mut buf: Vec<u8> = Vec::with_capacity(IO_BUF);
    let mut inflight: Inflight = None;
    let mut total: u64 = 0;

    async fn settle(inflight: &mut Inflight, file: &mut Option<File>) -> io::Result<Option<Vec<u8>>> {
        if let Some(h) = inflight.take() {
            let (f, mut spent) = h.await.map_err(|e| io::Error::other(e.to_string()))??;
            *file = Some(f);
            spent.clear();
            return Ok(Some(spent));
        }
        Ok(None)
    }

    loop {
        let next = body.next().await;
        let done = match next {
            Some(Ok(chunk)) => {
                total += chunk.len() as u64;
                buf.extend_from_slice(&chunk);
                false
            }
            Some(Err(e)) => {
                settle(&mut inflight, &mut file).await?;
                return Err(StorageError::Body(e));
            }
            None => true,
        };
        if buf.len() >= IO_BUF || (done && !buf.is_empty()) {
            let spare = settle(&mut inflight, &mut file).await?;
            let mut f = file.take().expect("file is back after settle");
            let data = std::mem::replace(&mut buf, spare.unwrap_or_else(|| Vec::with_capacity(IO_BUF)));
            inflight = Some(tokio::task::spawn_blocking(move || {
                f.write_all(&data)?;
                Ok((f, data))
            }));
        }
        if done {
            break;
        }
    }
    settle(&mut inflight, &mut file).await?;
    Ok((file.expect("file is back"), total))
}

#[async_trait::async_trait]
impl BlobStore for FsStore {
    async fn stat(&self, digest: &Digest) -> Result<u64> {
        let p = self.blob_path(digest);
        Ok(blocking(move || fs::metadata(p)).await.map_err(not_found)?.len())
    }

    async fn get(&self, digest: &Digest, range: Option<(u64, u64)>) -> Result<BlobReader> {
        let p = self.blob_path(digest);
        let (file, size) = blocking(move || {
            let f = File::open(p)?;
            let len = f.metadata()?.len();
            Ok((f, len))
        })
        .await
        .map_err(not_found)?;
        let (start, len) = match range {
            None => (0, size),
            Some((s, e)) if s <= e && e < size => (s, e - s + 1),
            Some(_) => return Err(StorageError::RangeNotSatisfiable),
        };
        let mut file = file;
        if start > 0 {
            file.seek(SeekFrom::Start(start))?;
        }
        let reader = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), len);
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, READ_BUF);
        Ok(BlobReader {
            size,
            stream: Box::pin(stream),
        })
    }

    async fn put(&self, digest: &Digest, bytes: Bytes) -> Result<()> {
        let tmp = self.root.join("tmp").join(uuid::Uuid::new_v4().simple().to_string());
        let this = self.clone();
        let digest = digest.clone();
        blocking(move || {
            let write = || -> io::Result<()> {
                let mut f = File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                this.publish(&tmp, &digest)
            };
            let r = write();
            if r.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            r
        })
        .await?;
        Ok(())
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        let p = self.blob_path(digest);
        blocking(move || match fs::remove_file(&p) {
            Ok(()) => sync_dir(p.parent().expect("parent")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await?;
        Ok(())
    }

    async fn upload_create(&self, id: &UploadId) -> Result<()> {
        let p = self.upload_path(id);
        blocking(move || {
            OpenOptions::new().write(true).create_new(true).open(&p)?.sync_all()?;
            sync_dir(p.parent().expect("parent"))
        })
        .await?;
        Ok(())
    }

    async fn upload_append(&self, id: &UploadId, offset: u64, body: ByteStream) -> Result<u64> {
        let p = self.upload_path(id);
        let file = blocking(move || {
            let f = OpenOptions::new().write(true).open(p)?;
            Ok(f)
        })
        .await
        .map_err(not_found)?;
        let mut file = file;
        let actual = file.metadata()?.len();
        if actual != offset {
            return Err(StorageError::OffsetMismatch {
                expected: offset,
                actual,
            });
        }
        file.seek(SeekFrom::Start(offset))?;
        let (file, written) = match pump(file.try_clone()?, body).await {
            Ok(r) => r,
            Err(e) => {
                // A chunk is all or nothing: cut back what a failed body left behind.
                let _ = blocking(move || {
                    file.set_len(offset)?;
                    file.sync_data()
                })
                .await;
                return Err(e);
            }
        };
        blocking(move || file.sync_data()).await?;
        Ok(offset + written)
    }

    async fn upload_size(&self, id: &UploadId) -> Result<u64> {
        let p = self.upload_path(id);
        Ok(blocking(move || fs::metadata(p)).await.map_err(not_found)?.len())
    }

    async fn upload_read(&self, id: &UploadId) -> Result<ByteStream> {
        let p = self.upload_path(id);
        let f = blocking(move || File::open(p)).await.map_err(not_found)?;
        Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            tokio::fs::File::from_std(f),
            READ_BUF,
        )))
    }

    async fn upload_commit(&self, id: &UploadId, digest: &Digest) -> Result<()> {
        let from = self.upload_path(id);
        let this = self.clone();
        let digest = digest.clone();
        blocking(move || {
            // Appends were synced as they landed; sync again so a commit never
            // depends on how the upload was written.
            File::open(&from)?.sync_all()?;
            this.publish(&from, &digest)?;
            sync_dir(from.parent().expect("parent"))
        })
        .await
        .map_err(not_found)?;
        Ok(())
    }

    async fn upload_cancel(&self, id: &UploadId) -> Result<()> {
        let p = self.upload_path(id);
        blocking(move || match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await?;
        Ok(())
    }

    async fn upload_list(&self) -> Result<Vec<(UploadId, SystemTime)>> {
        let dir = self.root.join("uploads");
        Ok(blocking(move || {
            let mut out = Vec::new();
            for entry in fs::read_dir(dir)? {
                let entry = entry?;
                let Some(id) = entry.file_name().to_str().and_then(|s| s.parse::<UploadId>().ok()) else {
                    continue;
                };
                let modified = entry.metadata()?.modified()?;
                out.push((id, modified));
            }
            Ok(out)
        })
        .await?)
    }

    fn describe(&self) -> String {
        format!("filesystem at {}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn passes_the_backend_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path().join("store")).unwrap();
        crate::testsuite::run(&store).await;
    }

    #[tokio::test]
    async fn layout_is_content_addressed() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let d = Digest::sha256_of(b"hello");
        store.put(&d, Bytes::from_static(b"hello")).await.unwrap();
        let p = dir.path().join("blobs/sha256").join(&d.hex()[..2]).join(d.hex());
        assert_eq!(fs::read(&p).unwrap(), b"hello");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn refuses_an_unwritable_root() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        fs::write(&file, b"x").unwrap();
        let err = FsStore::open(file.join("sub")).unwrap_err();
        assert!(err.to_string().contains("cannot create"), "{err}");
    }
}
