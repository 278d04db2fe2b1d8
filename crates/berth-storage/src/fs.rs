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
//! ├── trash/
//! │   └── sha256-e3b0c442...b855       blob being removed by garbage collection
//! └── tmp/
//!     └── <random>                      small object being written, renamed into blobs/
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, Write};
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
const READ_BUF: usize = 512 << 10;
/// Buffers read ahead of the network, per download.
const READ_AHEAD: usize = 2;

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
        for sub in ["blobs", "uploads", "tmp", "trash"] {
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

    fn trash_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("trash")
            .join(format!("{}-{}", d.algorithm().as_str(), d.hex()))
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

/// O_DIRECT wants file offsets, lengths and buffer addresses aligned to the
/// device's logical block; 4096 covers every common device.
const ALIGN: usize = 4096;

/// A buffer whose data starts at an [`ALIGN`]ed address. Safe code cannot ask
/// the allocator for alignment, so it over-allocates and starts inside.
struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

/// Buffers kept for the next upload, at most: making one costs page faults
/// and zeroing a mebibyte, which small blobs would pay on every push.
const POOLED: usize = 8;

static POOL: std::sync::Mutex<Vec<AlignedBuf>> = std::sync::Mutex::new(Vec::new());

impl AlignedBuf {
    fn new() -> AlignedBuf {
        if let Some(mut b) = POOL.lock().unwrap().pop() {
            b.len = 0;
            return b;
        }
        let mem = vec![0u8; IO_BUF + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN);
        AlignedBuf { mem, start, len: 0 }
    }

    /// Gives the buffer back for reuse.
    fn recycle(self) {
        let mut pool = POOL.lock().unwrap();
        if pool.len() < POOLED {
            pool.push(self);
        }
    }

    fn data(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }

    fn room(&self) -> usize {
        IO_BUF - self.len
    }

    /// Copies as much of `b` as fits; returns how much that was.
    fn push(&mut self, b: &[u8]) -> usize {
        let n = b.len().min(self.room());
        let at = self.start + self.len;
        self.mem[at..at + n].copy_from_slice(&b[..n]);
        self.len += n;
        n
    }
}

/// Where an append's bytes go. Whole aligned blocks are written with
/// O_DIRECT when the filesystem allows it: on a virtual disk that is several
/// times faster than copying through the page cache, and there is nothing
/// left to flush at the end. Everything else (a head that brings the offset
/// to a block boundary, the tail, or all of it where O_DIRECT is refused)
/// goes through the page cache and is synced before the append returns.
struct Sink {
    file: File,
    direct: Option<File>,
    pos: u64,
}

impl Sink {
    fn open(path: &Path, pos: u64) -> io::Result<Sink> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new().write(true).open(path)?;
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        Ok(Sink { file, direct, pos })
    }

    /// Writes all of `data` at the current position: whole blocks directly
    /// when the position and the buffer are aligned, the rest through the
    /// page cache.
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut written = 0;
        if let Some(d) = &self.direct {
            let whole = data.len() / ALIGN * ALIGN;
            let aligned = self.pos.is_multiple_of(ALIGN as u64) && data.as_ptr().align_offset(ALIGN) == 0;
            if aligned && whole > 0 {
                match d.write_all_at(&data[..whole], self.pos) {
                    Ok(()) => {
                        written = whole;
                        self.pos += whole as u64;
                    }
                    // Refused (a filesystem or device with other rules):
                    // the page cache takes it from here.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                    Err(e) => return Err(e),
                }
            }
        }
        if written < data.len() {
            self.file.write_all_at(&data[written..], self.pos)?;
            self.pos += (data.len() - written) as u64;
        }
        Ok(())
    }

    /// The bytes to write before the position is block-aligned.
    fn head(&self) -> usize {
        match self.pos % ALIGN as u64 {
            0 => 0,
            r => ALIGN - r as usize,
        }
    }
}

/// A disk write in progress: it hands back the sink and the spent buffer.
type Inflight = Option<JoinHandle<io::Result<(Sink, AlignedBuf)>>>;

/// Writes a body stream through `sink`, double-buffered so that the network
/// and the disk work at the same time. Returns the sink and the bytes written.
///
/// After a short head that brings the position to a block boundary, every
/// buffer handed to the disk is full ([`IO_BUF`], a whole number of blocks)
/// except the last, so the direct path stays aligned throughout.
async fn pump(sink: Sink, mut body: ByteStream) -> Result<(Sink, u64)> {
    let mut head = sink.head();
    let mut sink = Some(sink);
    let mut buf = AlignedBuf::new();
    let mut spare: Option<AlignedBuf> = None;
    let mut inflight: Inflight = None;
    let mut total: u64 = 0;

    async fn settle(inflight: &mut Inflight, sink: &mut Option<Sink>) -> io::Result<Option<AlignedBuf>> {
        if let Some(h) = inflight.take() {
            let (s, mut spent) = h.await.map_err(|e| io::Error::other(e.to_string()))??;
            *sink = Some(s);
            spent.len = 0;
            return Ok(Some(spent));
        }
        Ok(None)
    }

    fn dispatch(mut s: Sink, b: AlignedBuf) -> JoinHandle<io::Result<(Sink, AlignedBuf)>> {
        tokio::task::spawn_blocking(move || {
            s.write(b.data())?;
            Ok((s, b))
        })
    }

    loop {
        let chunk = match body.next().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                settle(&mut inflight, &mut sink).await?;
                return Err(StorageError::Body(e));
            }
            None => break,
        };
        total += chunk.len() as u64;
        let mut rest: &[u8] = &chunk;
        if head > 0 {
            // Nothing is in flight yet: the head comes before any buffer.
            let n = head.min(rest.len());
            let mut s = sink.take().expect("no write in flight during the head");
            let part = rest[..n].to_vec();
            let s = blocking(move || {
                s.write(&part)?;
                Ok(s)
            })
            .await?;
            sink = Some(s);
            head -= n;
            rest = &rest[n..];
        }
        while !rest.is_empty() {
            let n = buf.push(rest);
            rest = &rest[n..];
            if buf.room() == 0 {
                if let Some(b) = settle(&mut inflight, &mut sink).await? {
                    spare = Some(b);
                }
                let s = sink.take().expect("sink is back after settle");
                let next = spare.take().unwrap_or_else(AlignedBuf::new);
                inflight = Some(dispatch(s, std::mem::replace(&mut buf, next)));
            }
        }
    }
    if let Some(b) = settle(&mut inflight, &mut sink).await? {
        b.recycle();
    }
    if let Some(b) = spare {
        b.recycle();
    }
    let s = sink.take().expect("sink is back");
    let s = blocking(move || {
        let mut s = s;
        if buf.len > 0 {
            s.write(buf.data())?;
        }
        buf.recycle();
        Ok(s)
    })
    .await?;
    Ok((s, total))
}

/// Reads exactly `n` bytes at `at` into a new buffer, without zeroing it first.
fn read_at(file: &File, at: u64, n: usize) -> io::Result<Bytes> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(n);
    let mut f = file;
    f.seek(io::SeekFrom::Start(at))?;
    f.take(n as u64).read_to_end(&mut buf)?;
    if buf.len() < n {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "blob is shorter than recorded",
        ));
    }
    Ok(Bytes::from(buf))
}

/// Streams `len` bytes of `file` from `start`. One blocking thread reads
/// ahead straight into the buffers that go to the network, [`READ_AHEAD`]
/// of them at most: one copy out of the page cache, and no thread hop per read.
fn read_stream(file: File, start: u64, len: u64) -> ByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let (mut at, end) = (start, start + len);
        while at < end {
            let n = (end - at).min(READ_BUF as u64) as usize;
            let r = read_at(&file, at, n);
            let failed = r.is_err();
            // The receiver is gone when the client went away: stop reading.
            if tx.blocking_send(r).is_err() || failed {
                return;
            }
            at += n as u64;
        }
    });
    let mut rx = rx;
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
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
        Ok(BlobReader {
            size,
            stream: read_stream(file, start, len),
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

    async fn trash(&self, digest: &Digest) -> Result<bool> {
        let (from, to) = (self.blob_path(digest), self.trash_path(digest));
        blocking(move || match fs::rename(&from, &to) {
            Ok(()) => {
                sync_dir(from.parent().expect("parent"))?;
                sync_dir(to.parent().expect("parent"))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        })
        .await
        .map_err(StorageError::Io)
    }

    async fn restore(&self, digest: &Digest) -> Result<bool> {
        let from = self.trash_path(digest);
        if !from.exists() {
            return Ok(false);
        }
        // Stored again meanwhile: same digest, same bytes; keep the new one.
        if self.stat(digest).await.is_ok() {
            self.purge(digest).await?;
            return Ok(true);
        }
        let this = self.clone();
        let digest = digest.clone();
        blocking(move || {
            this.publish(&from, &digest)?;
            sync_dir(from.parent().expect("parent"))?;
            Ok(true)
        })
        .await
        .map_err(StorageError::Io)
    }

    async fn purge(&self, digest: &Digest) -> Result<()> {
        let p = self.trash_path(digest);
        blocking(move || match fs::remove_file(&p) {
            Ok(()) => sync_dir(p.parent().expect("parent")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await?;
        Ok(())
    }

    async fn trashed(&self) -> Result<Vec<Digest>> {
        let dir = self.root.join("trash");
        Ok(blocking(move || {
            let mut out = Vec::new();
            for entry in fs::read_dir(dir)? {
                let name = entry?.file_name();
                if let Some(d) = name
                    .to_str()
                    .and_then(|n| n.replacen('-', ":", 1).parse::<Digest>().ok())
                {
                    out.push(d);
                }
            }
            Ok(out)
        })
        .await?)
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
        let sink = blocking(move || {
            let sink = Sink::open(&p, 0)?;
            let len = sink.file.metadata()?.len();
            Ok(Sink { pos: len, ..sink })
        })
        .await
        .map_err(not_found)?;
        if sink.pos != offset {
            return Err(StorageError::OffsetMismatch {
                expected: offset,
                actual: sink.pos,
            });
        }
        let file = sink.file.try_clone()?;
        let written = match pump(sink, body).await {
            Ok((_, written)) => written,
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
        let (f, len) = blocking(move || {
            let f = File::open(p)?;
            let len = f.metadata()?.len();
            Ok((f, len))
        })
        .await
        .map_err(not_found)?;
        Ok(read_stream(f, 0, len))
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
                // An upload that finished (or was cancelled) since the
                // directory was read is simply no longer listed.
                let modified = match entry.metadata() {
                    Ok(m) => m.modified()?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
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

    /// The direct path and the page-cache path write the same bytes, from
    /// aligned and unaligned starts, and a refused O_DIRECT falls back.
    #[test]
    fn direct_and_buffered_writes_agree() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(3 * IO_BUF + 777)).map(|i| (i * 7 + i / 4096) as u8).collect();
        for (name, start, direct) in [
            ("a", 0usize, true),
            ("b", 0, false),
            ("c", 100, true),
            ("d", 4096, true),
        ] {
            let p = dir.path().join(name);
            fs::write(&p, &data[..start]).unwrap();
            let mut sink = Sink::open(&p, start as u64).unwrap();
            if !direct {
                sink.direct = None;
            } else if sink.direct.is_none() {
                eprintln!(
                    "O_DIRECT is not available under {}: only the fallback is tested",
                    dir.path().display()
                );
            }
            let head = sink.head();
            sink.write(&data[start..start + head]).unwrap();
            let mut at = start + head;
            let mut buf = AlignedBuf::new();
            while at < data.len() {
                buf.len = 0;
                let n = buf.push(&data[at..]);
                sink.write(buf.data()).unwrap();
                at += n;
            }
            assert_eq!(sink.pos, data.len() as u64);
            sink.file.sync_data().unwrap();
            assert!(fs::read(&p).unwrap() == data, "{name}: file holds what was written");
        }
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
