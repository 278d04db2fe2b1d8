//! Starting on an S3 bucket that cannot be used is an error that says why,
//! never a server that takes pushes it cannot keep.

mod common;

use berth_storage::testsuite::{S3Server, S3_ACCESS_KEY, S3_SECRET_KEY};
use common::*;

#[test]
fn a_bucket_that_cannot_be_written_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(s3) = S3Server::start(&tmp.path().join("s3"), "images") else {
        return;
    };
    let data = tmp.path().join("data");
    let data = data.to_str().unwrap();
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for (endpoint, secret, says) in [
        (s3.endpoint.as_str(), "not-the-secret", "cannot write in bucket images"),
        (closed.as_str(), S3_SECRET_KEY, "cannot write in bucket images"),
    ] {
        let (ok, _, err) = berth(
            &["serve", "--listen", "127.0.0.1:0", "--data-dir", data],
            &[
                ("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD),
                ("BERTH_STORAGE_BACKEND", "s3"),
                ("BERTH_STORAGE_S3_BUCKET", "images"),
                ("BERTH_STORAGE_S3_ENDPOINT", endpoint),
                ("BERTH_STORAGE_S3_ACCESS_KEY", S3_ACCESS_KEY),
                ("BERTH_STORAGE_S3_SECRET_KEY", secret),
            ],
        );
        assert!(!ok, "berth started on an unusable bucket");
        assert!(err.contains(says), "{err}");
    }
}
