//! Redis as the GCS's durable store (`RAY_REDIS_ADDRESS`), as Ray's GCS fault
//! tolerance uses it: the tables outlive the whole head, so a head restarted on
//! another machine (or after a crash of every head process) finds the cluster
//! again. Each table is one hash, `ray-rs@<namespace>@<table>`; the set
//! `ray-rs@<namespace>` names the tables. `<namespace>` is
//! `RAY_external_storage_namespace` (Ray's setting), `default` when unset, so
//! several clusters can share one Redis.

use async_trait::async_trait;
use redis::aio::ConnectionManager;

use crate::durable_store::{Backend, StoreOp, Tables};
use crate::storage::StoreError;

/// A Redis server.
pub struct RedisBackend {
    conn: ConnectionManager,
    /// `host:port`, for logs (never the password).
    shown: String,
    namespace: String,
}

/// Why Redis cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// The address is not `host:port` or `redis://[:password@]host:port[/db]`.
    #[error("RAY_REDIS_ADDRESS={0:?}: expected host:port or redis://[:password@]host:port ({1})")]
    Address(String, String),
    /// Redis did not answer.
    #[error("cannot reach Redis at {0} (RAY_REDIS_ADDRESS): {1}")]
    Connect(String, String),
}

fn url_for(address: &str, password: Option<&str>) -> Result<(String, String), RedisSetupError> {
    let bad = |why: &str| RedisSetupError::Address(address.to_string(), why.to_string());
    if address.starts_with("rediss://") {
        return Err(bad("TLS to Redis (rediss://) is not supported"));
    }
    let rest = address.strip_prefix("redis://").unwrap_or(address);
    let (auth, hostport) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let hostport = hostport.split('/').next().unwrap_or_default();
    let (host, port) = hostport.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if host.is_empty() {
        return Err(bad("no host"));
    }
    port.parse::<u16>().map_err(|_| bad("the port is not a number"))?;
    let url = match (auth, password) {
        (Some(_), _) => format!("redis://{rest}"),
        (None, Some(p)) if !p.is_empty() => format!("redis://:{}@{hostport}", urlencode(p)),
        _ => format!("redis://{hostport}"),
    };
    Ok((url, hostport.to_string()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

impl RedisBackend {
    /// Connects to `address` (`RAY_REDIS_ADDRESS`), with `password`
    /// (`RAY_REDIS_PASSWORD`) unless the address carries one.
    pub async fn connect(address: &str, password: Option<&str>, namespace: &str) -> Result<Self, RedisSetupError> {
        let (url, shown) = url_for(address, password)?;
        let client = redis::Client::open(url.as_str()).map_err(|e| RedisSetupError::Address(address.to_string(), e.to_string()))?;
        let conn = tokio::time::timeout(std::time::Duration::from_secs(10), client.get_connection_manager())
            .await
            .map_err(|_| RedisSetupError::Connect(shown.clone(), "no answer within 10 s".into()))?
            .map_err(|e| RedisSetupError::Connect(shown.clone(), e.to_string()))?;
        Ok(Self { conn, shown, namespace: namespace.to_string() })
    }

    fn index_key(&self) -> String {
        format!("ray-rs@{}", self.namespace)
    }

    fn table_key(&self, table: &str) -> String {
        format!("ray-rs@{}@{table}", self.namespace)
    }

    fn err(&self, e: redis::RedisError) -> StoreError {
        StoreError(format!("Redis at {}: {e}", self.shown))
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn load(&self) -> Result<Tables, StoreError> {
        let mut conn = self.conn.clone();
        let names: Vec<String> = redis::cmd("SMEMBERS").arg(self.index_key()).query_async(&mut conn).await.map_err(|e| self.err(e))?;
        let mut out = Tables::new();
        for name in names {
            let entries: Vec<(Vec<u8>, Vec<u8>)> =
                redis::cmd("HGETALL").arg(self.table_key(&name)).query_async(&mut conn).await.map_err(|e| self.err(e))?;
            out.entry(name).or_default().extend(entries);
        }
        Ok(out)
    }

    async fn apply(&self, ops: Vec<StoreOp>) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut tables: Vec<&str> = ops.iter().map(|o| o.table.as_str()).collect();
        tables.sort_unstable();
        tables.dedup();
        pipe.cmd("SADD").arg(self.index_key()).arg(&tables).ignore();
        for op in &ops {
            match &op.value {
                Some(v) => pipe.cmd("HSET").arg(self.table_key(&op.table)).arg(&op.key).arg(v).ignore(),
                None => pipe.cmd("HDEL").arg(self.table_key(&op.table)).arg(&op.key).ignore(),
            };
        }
        pipe.query_async::<()>(&mut conn).await.map_err(|e| self.err(e))
    }

    fn describe(&self) -> String {
        format!("Redis at {} (namespace {})", self.shown, self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_and_passwords_stay_out_of_what_is_shown() {
        assert_eq!(url_for("127.0.0.1:6380", None).unwrap(), ("redis://127.0.0.1:6380".into(), "127.0.0.1:6380".into()));
        let (url, shown) = url_for("redis://h:1", Some("p@ss")).unwrap();
        assert_eq!(url, "redis://:p%40ss@h:1");
        assert_eq!(shown, "h:1");
        let (url, shown) = url_for("redis://:secret@h:2/0", None).unwrap();
        assert!(url.contains("secret"));
        assert_eq!(shown, "h:2");
        for bad in ["h", ":1", "h:x", "rediss://h:1"] {
            let e = url_for(bad, None).unwrap_err().to_string();
            assert!(e.contains("RAY_REDIS_ADDRESS"), "{e}");
        }
    }
}
