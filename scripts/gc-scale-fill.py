# Fills a berth SQLite database with N blob rows, a tenth of them referenced
# by manifests, to time a garbage collection's metadata scan.
import sqlite3, sys, hashlib, time
db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
c.execute("PRAGMA journal_mode=WAL"); c.execute("PRAGMA synchronous=OFF")
c.execute("INSERT OR IGNORE INTO repositories (name, created_at) VALUES ('library/scale', 0)")
rid = c.execute("SELECT id FROM repositories WHERE name='library/scale'").fetchone()[0]
old = 1000
def d(i): return "sha256:" + hashlib.sha256(str(i).encode()).hexdigest()
batch = []
for i in range(n):
    batch.append((d(i), 1000, old, old))
    if len(batch) == 50000:
        c.executemany("INSERT INTO blobs (digest, size, created_at, touched_at) VALUES (?,?,?,?)", batch); batch = []
if batch: c.executemany("INSERT INTO blobs (digest, size, created_at, touched_at) VALUES (?,?,?,?)", batch)
# One manifest referencing every tenth blob.
m = "sha256:" + "f" * 64
c.execute("INSERT INTO blobs (digest, size, created_at, touched_at) VALUES (?,?,?,?)", (m, 10, old, old))
c.execute("INSERT INTO manifests (repository_id, digest, media_type, size, pushed_at) VALUES (?,?,?,?,?)", (rid, m, "application/vnd.oci.image.manifest.v1+json", 10, old))
c.execute("INSERT INTO tags (repository_id, name, manifest_digest, updated_at) VALUES (?,?,?,?)", (rid, "keep", m, old))
c.executemany("INSERT INTO manifest_references (repository_id, manifest_digest, target_digest, target_is_manifest) VALUES (?,?,?,0)", [(rid, m, d(i)) for i in range(0, n, 10)])
c.commit()
print("rows", c.execute("SELECT COUNT(*) FROM blobs").fetchone()[0])
