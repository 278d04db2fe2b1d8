//! What every pull reads, kept in memory.
//!
//! [`ContentCache`]: manifest bytes by digest. Content-addressed bytes never
//! change, so an entry cannot go stale. Bounded in total size; the oldest
//! entry goes first.
//!
//! [`ResolveCache`]: what a repository name and a tag or digest resolved to
//! in the database. An entry is dropped as soon as this process commits any
//! change to tags or manifests ([`berth_db::Db::changes`]), and in any case
//! after a short time to live, which bounds how long a change made through
//! another replica can go unseen here.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_db::ManifestRow;
use berth_oci::Digest;
use bytes::Bytes;

pub struct ContentCache {
    max_total: usize,
    max_entry: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Digest, Bytes>,
    order: VecDeque<Digest>,
    total: usize,
}

impl ContentCache {
    /// Holds at most `max_total` bytes, in entries of at most `max_entry` bytes.
    pub fn new(max_total: usize, max_entry: usize) -> ContentCache {
        ContentCache {
            max_total,
            max_entry: max_entry.min(max_total),
            inner: Mutex::default(),
        }
    }

    pub fn get(&self, digest: &Digest) -> Option<Bytes> {
        self.inner.lock().unwrap().map.get(digest).cloned()
    }

    /// Keeps `bytes` as the content of `digest`. The caller has verified them.
    pub fn insert(&self, digest: &Digest, bytes: Bytes) {
        if bytes.len() > self.max_entry {
            return;
        }
        let mut g = self.inner.lock().unwrap();
        if g.map.contains_key(digest) {
            return;
        }
        while g.total + bytes.len() > self.max_total {
            let Some(old) = g.order.pop_front() else { break };
            if let Some(b) = g.map.remove(&old) {
                g.total -= b.len();
            }
        }
        g.total += bytes.len();
        g.order.push_back(digest.clone());
        g.map.insert(digest.clone(), bytes);
    }

    #[cfg(test)]
    fn size(&self) -> usize {
        self.inner.lock().unwrap().total
    }
}

pub struct ResolveCache {
    ttl: Duration,
    max_entries: usize,
    inner: Mutex<HashMap<String, Resolved>>,
}

struct Resolved {
    changes: u64,
    at: Instant,
    repo_id: i64,
    row: Arc<ManifestRow>,
}

fn key(repo: &str, reference: &str) -> String {
    // A newline is in neither a repository name nor a reference.
    format!("{repo}\n{reference}")
}

impl ResolveCache {
    /// A `ttl` of zero keeps nothing.
    pub fn new(ttl: Duration, max_entries: usize) -> ResolveCache {
        ResolveCache {
            ttl,
            max_entries,
            inner: Mutex::default(),
        }
    }

    /// The entry, if it is younger than the time to live and no change was
    /// committed by this process since it was read (`changes` is the count now).
    pub fn get(&self, repo: &str, reference: &str, changes: u64) -> Option<(i64, Arc<ManifestRow>)> {
        if self.ttl.is_zero() {
            return None;
        }
        let g = self.inner.lock().unwrap();
        let e = g.get(&key(repo, reference))?;
        (e.changes == changes && e.at.elapsed() < self.ttl).then(|| (e.repo_id, e.row.clone()))
    }

    /// Keeps a resolution read from the database. `changes` is the count
    /// taken before the read, so a change committed meanwhile voids it.
    pub fn insert(&self, repo: &str, reference: &str, changes: u64, repo_id: i64, row: Arc<ManifestRow>) {
        if self.ttl.is_zero() {
            return;
        }
        let mut g = self.inner.lock().unwrap();
        if g.len() >= self.max_entries {
            let ttl = self.ttl;
            g.retain(|_, e| e.changes == changes && e.at.elapsed() < ttl);
            if g.len() >= self.max_entries {
                g.clear();
            }
        }
        g.insert(
            key(repo, reference),
            Resolved {
                changes,
                at: Instant::now(),
                repo_id,
                row,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(d: &str) -> Arc<ManifestRow> {
        Arc::new(ManifestRow {
            digest: d.into(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            artifact_type: None,
            subject: None,
            size: 2,
            annotations: None,
            pushed_at: 0,
        })
    }

    #[test]
    fn a_resolution_lives_until_a_change_or_its_time_is_up() {
        let c = ResolveCache::new(Duration::from_millis(200), 2);
        c.insert("lib/a", "v1", 7, 1, row("sha256:a"));
        assert_eq!(c.get("lib/a", "v1", 7).unwrap().1.digest, "sha256:a");
        assert!(c.get("lib/a", "v2", 7).is_none());
        assert!(c.get("lib/b", "v1", 7).is_none());
        assert!(c.get("lib/a", "v1", 8).is_none(), "a change committed here voids it");
        // Read before a change and stored after it: void at once.
        c.insert("lib/a", "v3", 7, 1, row("sha256:c"));
        assert!(c.get("lib/a", "v3", 8).is_none());
        c.insert("lib/a", "v1", 8, 1, row("sha256:b"));
        std::thread::sleep(Duration::from_millis(250));
        assert!(c.get("lib/a", "v1", 8).is_none(), "aged out");
        // Bounded in entries.
        for i in 0..10 {
            c.insert("lib/a", &format!("t{i}"), 8, 1, row("sha256:d"));
        }
        assert!(c.inner.lock().unwrap().len() <= 2);

        let off = ResolveCache::new(Duration::ZERO, 10);
        off.insert("lib/a", "v1", 1, 1, row("sha256:a"));
        assert!(off.get("lib/a", "v1", 1).is_none());
    }

    fn entry(n: u8, len: usize) -> (Digest, Bytes) {
        let b = Bytes::from(vec![n; len]);
        (Digest::sha256_of(&b), b)
    }

    #[test]
    fn keeps_within_its_bounds_dropping_the_oldest() {
        let c = ContentCache::new(100, 40);
        let (a, ab) = entry(1, 40);
        let (b, bb) = entry(2, 40);
        let (d, db) = entry(3, 30);
        c.insert(&a, ab.clone());
        c.insert(&b, bb.clone());
        assert_eq!(c.size(), 80);
        c.insert(&d, db.clone());
        assert_eq!(c.get(&a), None, "the oldest made room");
        assert_eq!(c.get(&b), Some(bb));
        assert_eq!(c.get(&d), Some(db));
        assert_eq!(c.size(), 70);

        let (big, bigb) = entry(4, 41);
        c.insert(&big, bigb);
        assert_eq!(c.get(&big), None, "larger than an entry may be");

        c.insert(&d, Bytes::from_static(b"ignored: already held"));
        assert_eq!(c.size(), 70);
    }
}
