//! The suite every [`BlobStore`] backend must pass.

use berth_oci::{Digest, UploadId};
use bytes::Bytes;
use futures_util::{stream, StreamExt};

use crate::{BlobStore, ByteStream, StorageError};

fn body(parts: &[&'static [u8]]) -> ByteStream {
    let v: Vec<std::io::Result<Bytes>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
    Box::pin(stream::iter(v))
}

fn failing_body() -> ByteStream {
    Box::pin(stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::other("client went away")),
    ]))
}

pub async fn collect(mut s: ByteStream) -> Vec<u8> {
    let mut v = Vec::new();
    while let Some(chunk) = s.next().await {
        v.extend_from_slice(&chunk.expect("stream chunk"));
    }
    v
}

fn id(n: u8) -> UploadId {
    UploadId::from_random([n; 16])
}

/// Runs every check against `store`. Panics on the first failure.
pub async fn run(store: &dyn BlobStore) {
    blobs(store).await;
    uploads(store).await;
    failed_append_leaves_upload_as_it_was(store).await;
    appends_of_awkward_sizes(store).await;
    trash_restore_and_purge(store).await;
}

async fn trash_restore_and_purge(store: &dyn BlobStore) {
    let d = Digest::sha256_of(b"garbage, maybe");
    assert!(!store.trash(&d).await.unwrap(), "nothing to trash");
    assert!(!store.restore(&d).await.unwrap(), "nothing to restore");
    store.put(&d, Bytes::from_static(b"garbage, maybe")).await.unwrap();
    assert!(store.trash(&d).await.unwrap());
    assert!(matches!(store.stat(&d).await, Err(StorageError::NotFound)));
    assert_eq!(store.trashed().await.unwrap(), vec![d.clone()]);
    // Undone: the blob is back, the trash empty.
    assert!(store.restore(&d).await.unwrap());
    assert_eq!(
        collect(store.get(&d, None).await.unwrap().stream).await,
        b"garbage, maybe"
    );
    assert!(store.trashed().await.unwrap().is_empty());
    // Trashed, then stored again by a push, then restored: one copy, intact.
    assert!(store.trash(&d).await.unwrap());
    store.put(&d, Bytes::from_static(b"garbage, maybe")).await.unwrap();
    assert!(store.restore(&d).await.unwrap());
    assert_eq!(
        collect(store.get(&d, None).await.unwrap().stream).await,
        b"garbage, maybe"
    );
    assert!(store.trashed().await.unwrap().is_empty());
    // Committed removal.
    assert!(store.trash(&d).await.unwrap());
    store.purge(&d).await.unwrap();
    store.purge(&d).await.unwrap();
    assert!(store.trashed().await.unwrap().is_empty());
    assert!(matches!(store.stat(&d).await, Err(StorageError::NotFound)));
}

/// Deterministic bytes that differ at every offset that matters.
fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ salt)
        .collect()
}

/// Appends that start and end off block boundaries, arrive in network-sized
/// pieces that straddle buffer edges, and cross the backends' buffer sizes;
/// then reads back the whole and ranges of it.
async fn appends_of_awkward_sizes(store: &dyn BlobStore) {
    let u = id(9);
    store.upload_create(&u).await.unwrap();
    let mut all = Vec::new();
    // Lengths: one byte, up to a block edge, past it, more than a MiB in odd
    // pieces, an exact MiB, and a short tail.
    for (n, (len, piece)) in [
        (1usize, 1usize),
        (4095, 1000),
        (4097, 4096),
        ((1 << 20) + 12_345, 65_537),
        (1 << 20, 1 << 20),
        (3 << 20, 300_007),
        (17, 5),
    ]
    .into_iter()
    .enumerate()
    {
        let data = pattern(len, n as u8);
        let parts: Vec<std::io::Result<Bytes>> = data.chunks(piece).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let end = store
            .upload_append(&u, all.len() as u64, Box::pin(stream::iter(parts)))
            .await
            .unwrap();
        all.extend_from_slice(&data);
        assert_eq!(end, all.len() as u64, "append {n}");
        assert_eq!(store.upload_size(&u).await.unwrap(), all.len() as u64);
    }
    assert!(
        collect(store.upload_read(&u).await.unwrap()).await == all,
        "upload reads back"
    );
    let d = Digest::sha256_of(&all);
    store.upload_commit(&u, &d).await.unwrap();
    let r = store.get(&d, None).await.unwrap();
    assert_eq!(r.size, all.len() as u64);
    assert!(collect(r.stream).await == all, "blob reads back");
    for (a, b) in [
        (0, 0),
        (4095, 4096),
        (1 << 20, (3 << 20) + 5),
        (all.len() - 1, all.len() - 1),
    ] {
        let r = store.get(&d, Some((a as u64, b as u64))).await.unwrap();
        assert!(collect(r.stream).await == all[a..=b], "range {a}-{b}");
    }
    store.delete(&d).await.unwrap();
}

async fn blobs(store: &dyn BlobStore) {
    let d = Digest::sha256_of(b"0123456789");
    assert!(matches!(store.stat(&d).await, Err(StorageError::NotFound)));
    assert!(matches!(store.get(&d, None).await, Err(StorageError::NotFound)));
    store.put(&d, Bytes::from_static(b"0123456789")).await.unwrap();
    // Putting the same content twice is harmless.
    store.put(&d, Bytes::from_static(b"0123456789")).await.unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), 10);
    let r = store.get(&d, None).await.unwrap();
    assert_eq!(r.size, 10);
    assert_eq!(collect(r.stream).await, b"0123456789");
    let r = store.get(&d, Some((2, 4))).await.unwrap();
    assert_eq!(r.size, 10);
    assert_eq!(collect(r.stream).await, b"234");
    let r = store.get(&d, Some((9, 9))).await.unwrap();
    assert_eq!(collect(r.stream).await, b"9");
    assert!(matches!(
        store.get(&d, Some((5, 10))).await,
        Err(StorageError::RangeNotSatisfiable)
    ));
    assert!(matches!(
        store.get(&d, Some((5, 4))).await,
        Err(StorageError::RangeNotSatisfiable)
    ));
    store.delete(&d).await.unwrap();
    store.delete(&d).await.unwrap();
    assert!(matches!(store.stat(&d).await, Err(StorageError::NotFound)));
}

async fn uploads(store: &dyn BlobStore) {
    let u = id(1);
    assert!(matches!(store.upload_size(&u).await, Err(StorageError::NotFound)));
    assert!(matches!(
        store.upload_append(&u, 0, body(&[b"x"])).await,
        Err(StorageError::NotFound)
    ));
    store.upload_create(&u).await.unwrap();
    assert_eq!(store.upload_size(&u).await.unwrap(), 0);
    assert_eq!(store.upload_append(&u, 0, body(&[b"hello ", b"wor"])).await.unwrap(), 9);
    match store.upload_append(&u, 3, body(&[b"x"])).await {
        Err(StorageError::OffsetMismatch { expected: 3, actual: 9 }) => {}
        other => panic!("expected an offset mismatch, got {:?}", other.map(|_| ())),
    }
    assert_eq!(store.upload_append(&u, 9, body(&[b"ld"])).await.unwrap(), 11);
    assert_eq!(store.upload_append(&u, 11, body(&[])).await.unwrap(), 11);
    assert_eq!(collect(store.upload_read(&u).await.unwrap()).await, b"hello world");
    let listed = store.upload_list().await.unwrap();
    assert!(listed.iter().any(|(x, _)| *x == u));

    let d = Digest::sha256_of(b"hello world");
    store.upload_commit(&u, &d).await.unwrap();
    assert_eq!(store.stat(&d).await.unwrap(), 11);
    assert!(matches!(store.upload_size(&u).await, Err(StorageError::NotFound)));
    assert!(!store.upload_list().await.unwrap().iter().any(|(x, _)| *x == u));

    // A second upload of the same content commits onto the existing blob.
    let u2 = id(2);
    store.upload_create(&u2).await.unwrap();
    store.upload_append(&u2, 0, body(&[b"hello world"])).await.unwrap();
    store.upload_commit(&u2, &d).await.unwrap();
    assert_eq!(collect(store.get(&d, None).await.unwrap().stream).await, b"hello world");

    let u3 = id(3);
    store.upload_create(&u3).await.unwrap();
    store.upload_cancel(&u3).await.unwrap();
    store.upload_cancel(&u3).await.unwrap();
    assert!(matches!(store.upload_size(&u3).await, Err(StorageError::NotFound)));
    store.delete(&d).await.unwrap();
}

async fn failed_append_leaves_upload_as_it_was(store: &dyn BlobStore) {
    let u = id(4);
    store.upload_create(&u).await.unwrap();
    store.upload_append(&u, 0, body(&[b"abc"])).await.unwrap();
    assert!(matches!(
        store.upload_append(&u, 3, failing_body()).await,
        Err(StorageError::Body(_))
    ));
    assert_eq!(store.upload_size(&u).await.unwrap(), 3);
    assert_eq!(store.upload_append(&u, 3, body(&[b"def"])).await.unwrap(), 6);
    assert_eq!(collect(store.upload_read(&u).await.unwrap()).await, b"abcdef");
    store.upload_cancel(&u).await.unwrap();
}

/// A real S3 server for tests: `s3s-fs` (from crates.io; the test command
/// installs it) serving a directory, on a port the OS picks. Stopped when
/// dropped.
pub struct S3Server {
    child: std::process::Child,
    pub endpoint: String,
    pub root: std::path::PathBuf,
}

pub const S3_ACCESS_KEY: &str = "berth-test";
pub const S3_SECRET_KEY: &str = "berth-test-secret";

impl S3Server {
    /// Starts the server with one empty bucket, `bucket`. None when s3s-fs
    /// is not installed and this is not CI (which the caller reports).
    pub fn start(root: &std::path::Path, bucket: &str) -> Option<S3Server> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        std::fs::create_dir_all(root.join(bucket)).expect("creating the bucket directory");
        let spawned = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", "0", "--access-key", S3_ACCESS_KEY])
            .args(["--secret-key", S3_SECRET_KEY])
            .arg(root)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                assert!(!ci, "s3s-fs is required in CI (the test command installs it): {e}");
                eprintln!(
                    "\n!!!!!!!! SKIPPED: s3s-fs is not installed ({e}); run the README's test command !!!!!!!!\n"
                );
                return None;
            }
        };
        // It logs "server is running at http://127.0.0.1:PORT" once it listens.
        let out = child.stdout.take().expect("piped stdout");
        let err = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        for r in [Box::new(out) as Box<dyn std::io::Read + Send>, Box::new(err)] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(r).lines().map_while(|l| l.ok()) {
                    if let Some(i) = line.find("server is running at ") {
                        let _ = tx.send(line[i + 21..].trim().to_string());
                    }
                }
            });
        }
        let endpoint = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("s3s-fs did not say where it listens");
        Some(S3Server {
            child,
            endpoint,
            root: root.to_path_buf(),
        })
    }

    pub fn config(&self, bucket: &str, prefix: &str) -> crate::S3Config {
        crate::S3Config {
            bucket: bucket.into(),
            endpoint: self.endpoint.clone(),
            region: "us-east-1".into(),
            access_key: S3_ACCESS_KEY.into(),
            secret_key: S3_SECRET_KEY.into(),
            prefix: prefix.into(),
            redirect: None,
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
