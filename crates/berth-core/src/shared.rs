//! State that replicas share: browser sessions (with their CSRF tokens),
//! failed-login counts, leases that make a background job run on one replica,
//! and short-lived caches.
//!
//! Without Redis, sessions and leases live in the database and counts and
//! caches in this process. With `redis.url`, all four live in Redis. A Redis
//! that stops answering never takes a replica down: session lookups fail with
//! a clear 503, login counting falls back to this process, caches miss, and a
//! lease is not taken, until a later call reconnects.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_db::Db;
use berth_oci::ErrorCode;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::{Error, Result};

/// A signed-in browser session as stored: its user and CSRF token.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionData {
    pub user_id: i64,
    pub csrf: String,
}

/// Keys berth writes in Redis all start with this.
const PREFIX: &str = "berth:";
/// How long one Redis call may take before the caller gets an error.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Shared {
    db: Db,
    redis: Option<RedisLink>,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    cache: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
}

/// One multiplexed connection, made on first use and made again after it broke.
struct RedisLink {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
}

/// Whether `url` names a Redis server berth can talk to.
pub fn check_redis_url(url: &str) -> std::result::Result<(), String> {
    redis::Client::open(url).map(|_| ()).map_err(|e| e.to_string())
}

fn unavailable(e: redis::RedisError) -> Error {
    Error::new(ErrorCode::Unavailable, format!("Redis is unavailable: {e}"))
}

impl RedisLink {
    async fn conn(&self) -> std::result::Result<ConnectionManager, redis::RedisError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let c = self.client.get_connection_manager_with_config(config).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs one command; after a connection failure the next call connects anew.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> std::result::Result<T, redis::RedisError> {
        let mut c = self.conn().await?;
        let r = cmd.query_async(&mut c).await;
        if let Err(e) = &r {
            if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_connection_refusal() {
                *self.conn.lock().await = None;
            }
        }
        r
    }
}

/// Counts a failed login and starts its window at the first one.
const FAIL_SCRIPT: &str = "local n = redis.call('INCR', KEYS[1]) \
     if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end return n";
/// Takes a lease that is free, or renews one that this holder has.
const LEASE_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else \
     if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 else return 0 end end";

impl Shared {
    /// Shared state in the database and this process only.
    pub fn local(db: Db) -> Shared {
        Shared {
            db,
            redis: None,
            failures: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Shared state in Redis at `url` (`redis://`, `rediss://` or
    /// `redis+unix://`). Only the URL is checked here; the connection is made
    /// on first use, so a replica starts even while Redis is down.
    pub fn with_redis(db: Db, url: &str) -> Result<Shared> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::new(ErrorCode::Unknown, format!("redis.url is not a Redis URL: {e}")))?;
        tracing::info!(url = %berth_db::redact(url), "shared state in Redis");
        Ok(Shared {
            redis: Some(RedisLink {
                client,
                conn: tokio::sync::Mutex::new(None),
            }),
            ..Shared::local(db)
        })
    }

    pub fn uses_redis(&self) -> bool {
        self.redis.is_some()
    }

    /// `Ok` when Redis answers (or is not used); the error says why not.
    pub async fn check(&self) -> Result<()> {
        if let Some(r) = &self.redis {
            r.query::<String>(&redis::cmd("PING")).await.map_err(unavailable)?;
        }
        Ok(())
    }

    pub async fn session_create(&self, id_hash: &str, s: &SessionData, ttl: Duration) -> Result<()> {
        match &self.redis {
            Some(r) => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(format!("{PREFIX}session:{id_hash}"))
                    .arg(format!("{} {}", s.user_id, s.csrf))
                    .arg("PX")
                    .arg(ttl.as_millis() as u64);
                r.query::<()>(&cmd).await.map_err(unavailable)
            }
            None => {
                let expires = berth_db::now_ms() + ttl.as_millis() as i64;
                Ok(self.db.create_session(id_hash, s.user_id, &s.csrf, expires).await?)
            }
        }
    }

    pub async fn session(&self, id_hash: &str) -> Result<Option<SessionData>> {
        match &self.redis {
            Some(r) => {
                let v: Option<String> = r
                    .query(redis::cmd("GET").arg(format!("{PREFIX}session:{id_hash}")))
                    .await
                    .map_err(unavailable)?;
                Ok(v.and_then(|v| {
                    let (id, csrf) = v.split_once(' ')?;
                    Some(SessionData {
                        user_id: id.parse().ok()?,
                        csrf: csrf.to_string(),
                    })
                }))
            }
            None => Ok(self.db.session(id_hash).await?.map(|s| SessionData {
                user_id: s.user_id,
                csrf: s.csrf,
            })),
        }
    }

    pub async fn session_delete(&self, id_hash: &str) -> Result<()> {
        match &self.redis {
            Some(r) => r
                .query::<()>(redis::cmd("DEL").arg(format!("{PREFIX}session:{id_hash}")))
                .await
                .map_err(unavailable),
            None => {
                self.db.delete_session(id_hash).await?;
                Ok(())
            }
        }
    }

    /// How long `who` must still wait, when `max` failures fell within `window`.
    pub async fn login_blocked(&self, who: &str, max: u32, window: Duration) -> Option<Duration> {
        if let Some(r) = &self.redis {
            let key = format!("{PREFIX}fail:{who}");
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(&key).cmd("PTTL").arg(&key);
            let mut c = match r.conn().await {
                Ok(c) => c,
                Err(e) => return self.local_fallback(e, || self.local_blocked(who, max, window)),
            };
            match pipe.query_async::<(Option<u32>, i64)>(&mut c).await {
                Ok((n, ttl)) => {
                    return (n.unwrap_or(0) >= max && ttl > 0).then(|| Duration::from_millis(ttl as u64));
                }
                Err(e) => return self.local_fallback(e, || self.local_blocked(who, max, window)),
            }
        }
        self.local_blocked(who, max, window)
    }

    pub async fn login_failed(&self, who: &str, window: Duration) {
        if let Some(r) = &self.redis {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(FAIL_SCRIPT)
                .arg(1)
                .arg(format!("{PREFIX}fail:{who}"))
                .arg(window.as_millis() as u64);
            match r.query::<u32>(&cmd).await {
                Ok(_) => return,
                Err(e) => tracing::warn!(error = %e, "Redis unavailable; counting failed logins in this replica"),
            }
        }
        let mut map = self.failures.lock().unwrap();
        let e = map.entry(who.to_string()).or_insert((0, Instant::now()));
        if e.1.elapsed() > window {
            *e = (0, Instant::now());
        }
        e.0 += 1;
        if map.len() > 100_000 {
            map.retain(|_, (_, t)| t.elapsed() <= window);
        }
    }

    pub async fn login_succeeded(&self, who: &str) {
        if let Some(r) = &self.redis {
            if let Err(e) = r
                .query::<()>(redis::cmd("DEL").arg(format!("{PREFIX}fail:{who}")))
                .await
            {
                tracing::warn!(error = %e, "Redis unavailable; cannot reset failed logins");
            }
        }
        self.failures.lock().unwrap().remove(who);
    }

    fn local_blocked(&self, who: &str, max: u32, window: Duration) -> Option<Duration> {
        let map = self.failures.lock().unwrap();
        let (n, since) = map.get(who)?;
        let left = window.checked_sub(since.elapsed())?;
        (*n >= max).then_some(left)
    }

    fn local_fallback<T>(&self, e: redis::RedisError, f: impl FnOnce() -> T) -> T {
        tracing::warn!(error = %e, "Redis unavailable; using this replica's failed-login counts");
        f()
    }

    /// Takes or renews the lease `name` for `holder`. False when another
    /// holder has it, or when the store cannot be asked (logged).
    pub async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> bool {
        let r = match &self.redis {
            Some(r) => {
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(LEASE_SCRIPT)
                    .arg(1)
                    .arg(format!("{PREFIX}lease:{name}"))
                    .arg(holder)
                    .arg(ttl.as_millis() as u64);
                r.query::<i64>(&cmd).await.map(|n| n == 1).map_err(|e| e.to_string())
            }
            None => self
                .db
                .try_lease(name, holder, ttl.as_millis() as i64)
                .await
                .map_err(|e| e.to_string()),
        };
        r.unwrap_or_else(|e| {
            tracing::warn!(error = %e, lease = name, "cannot take the lease");
            false
        })
    }

    /// A cached value, if present and fresh. Errors are misses.
    pub async fn cache_get(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(r) = &self.redis {
            return r
                .query::<Option<Vec<u8>>>(redis::cmd("GET").arg(format!("{PREFIX}cache:{key}")))
                .await
                .unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "cache miss: Redis unavailable");
                    None
                });
        }
        let map = self.cache.lock().unwrap();
        map.get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v.clone())
    }

    pub async fn cache_put(&self, key: &str, value: &[u8], ttl: Duration) {
        if let Some(r) = &self.redis {
            let mut cmd = redis::cmd("SET");
            cmd.arg(format!("{PREFIX}cache:{key}"))
                .arg(value)
                .arg("PX")
                .arg(ttl.as_millis() as u64);
            if let Err(e) = r.query::<()>(&cmd).await {
                tracing::debug!(error = %e, "not cached: Redis unavailable");
            }
            return;
        }
        let mut map = self.cache.lock().unwrap();
        if map.len() >= 10_000 {
            let now = Instant::now();
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= 10_000 {
                map.clear();
            }
        }
        map.insert(key.to_string(), (value.to_vec(), Instant::now() + ttl));
    }
}
