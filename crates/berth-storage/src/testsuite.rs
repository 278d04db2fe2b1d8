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
