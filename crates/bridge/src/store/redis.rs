//! The Redis conversation store: several instances share every call.
//!
//! A call has two keys, both under the hash tag `{CallSid}` so they live in one Redis Cluster
//! slot and one script may touch both:
//! - `ivr-bridge:call:{CA…}:history` — a list of exchanges (JSON), oldest first;
//! - `ivr-bridge:call:{CA…}:pending` — `wait:<id>` or `fail:<id>` while a reply is written;
//! - `ivr-bridge:call:{CA…}:next` — the call's next step (JSON) once its stream is to close.
//!
//! Appends run as Lua scripts, so append + trim + expire (+ clearing the pending mark) happen as
//! one step on the server. Every operation is bounded by our own `tokio::time::timeout`: when
//! Redis is down the caller hears an apology within [`StoreOptions::op_timeout`], and the
//! [`ConnectionManager`] reconnects by itself once Redis is back.
//!
//! `/speak_response` polls [`RedisStore::reply_state`] rather than blocking with `BLPOP`: a
//! blocking command would stall every other request multiplexed on the shared connection.

use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};

use super::{CallSid, Exchange, NextStep, ReplyId, ReplyState, StoreError, StoreOptions};

/// Prefix of every key this program writes.
const KEY_PREFIX: &str = "ivr-bridge:call:";
/// Reconnection attempts per connection loss before the manager gives up until the next
/// request; requests are bounded by our own timeout meanwhile.
const RECONNECT_RETRIES: usize = 2;
/// Longest pause between two reconnection attempts.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

/// Appends ARGV[1] to KEYS[1], keeps at most ARGV[2] exchanges and ARGV[3] bytes (never fewer
/// than the newest one), and sets the TTL to ARGV[4] ms. Returns the exchanges kept.
const APPEND_LUA: &str = r"
local function append(key, item, max_items, max_bytes, ttl)
  redis.call('RPUSH', key, item)
  redis.call('LTRIM', key, -max_items, -1)
  local items = redis.call('LRANGE', key, 0, -1)
  local total = 0
  for i = 1, #items do total = total + #items[i] end
  local first = 1
  while total > max_bytes and first < #items do
    total = total - #items[first]
    first = first + 1
    redis.call('LPOP', key)
  end
  redis.call('PEXPIRE', key, ttl)
  return #items - first + 1
end
";

/// `append` as a script of its own.
const APPEND_SCRIPT: &str = r"
return append(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
";

/// If KEYS[2] (pending) is `wait:ARGV[5]`: append to KEYS[1] and delete KEYS[2]; returns 1.
/// Otherwise changes nothing and returns 0.
const FINISH_SCRIPT: &str = r"
if redis.call('GET', KEYS[2]) ~= 'wait:' .. ARGV[5] then return 0 end
append(KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4])
redis.call('DEL', KEYS[2])
return 1
";

/// If KEYS[1] (pending) is `wait:ARGV[1]`: makes it `fail:ARGV[1]`, keeping its TTL.
const FAIL_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == 'wait:' .. ARGV[1] then
  redis.call('SET', KEYS[1], 'fail:' .. ARGV[1], 'KEEPTTL')
end
return 0
";

/// The scripts, hashed once. Loaded into Redis on first use and again after a Redis restart
/// (EVALSHA falls back to EVAL).
static APPEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{APPEND_LUA}{APPEND_SCRIPT}")));
static FINISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{APPEND_LUA}{FINISH_SCRIPT}")));
static FAIL: LazyLock<Script> = LazyLock::new(|| Script::new(FAIL_SCRIPT));

/// The Redis store. Cheap to clone; clones share one multiplexed, self-healing connection.
#[derive(Clone)]
pub struct RedisStore {
    /// Reconnects on connection loss; lazily connected on first use.
    connection: ConnectionManager,
    /// Bounds, TTLs and our per-operation deadline.
    options: StoreOptions,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store for `url`. Does not connect yet: the first operation does, and a Redis that is
    /// down then costs that operation an error, not the server its start.
    pub fn new(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let client = Client::open(url)?;
        // Our `bounded` deadline is what callers see; the client's own timeouts are a backstop
        // (twice as long) so that a background reconnection to a silent host ends too.
        let backstop = Some(options.op_timeout * 2);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(backstop)
            .set_response_timeout(backstop)
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(RECONNECT_MAX_DELAY);
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            connection,
            options,
        })
    }

    /// See [`super::Store::history`].
    pub async fn history(&self, call: &CallSid) -> Result<Vec<Exchange>, StoreError> {
        let mut con = self.connection.clone();
        let key = history_key(call);
        let items: Vec<String> = self
            .bounded(
                redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut con),
            )
            .await?;
        decode_all(&items)
    }

    /// See [`super::Store::append`].
    pub async fn append(&self, call: &CallSid, exchange: &Exchange) -> Result<(), StoreError> {
        let mut con = self.connection.clone();
        let mut invocation = APPEND.key(history_key(call));
        self.bounds_args(&mut invocation, exchange);
        let _kept: i64 = self.bounded(invocation.invoke_async(&mut con)).await?;
        Ok(())
    }

    /// See [`super::Store::begin_reply`]: in one transaction, reads the history, sets the
    /// pending mark and refreshes the history's TTL.
    pub async fn begin_reply(
        &self,
        call: &CallSid,
        id: &ReplyId,
    ) -> Result<Vec<Exchange>, StoreError> {
        let mut con = self.connection.clone();
        let history = history_key(call);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LRANGE")
            .arg(&history)
            .arg(0)
            .arg(-1)
            .cmd("SET")
            .arg(pending_key(call))
            .arg(format!("wait:{}", id.as_str()))
            .arg("PX")
            .arg(millis(self.options.pending_ttl))
            .ignore()
            .cmd("PEXPIRE")
            .arg(&history)
            .arg(millis(self.options.history_ttl))
            .ignore();
        let (items,): (Vec<String>,) = self.bounded(pipe.query_async(&mut con)).await?;
        decode_all(&items)
    }

    /// See [`super::Store::finish_reply`].
    pub async fn finish_reply(
        &self,
        call: &CallSid,
        id: &ReplyId,
        exchange: &Exchange,
    ) -> Result<bool, StoreError> {
        let mut con = self.connection.clone();
        let mut invocation = FINISH.key(history_key(call));
        invocation.key(pending_key(call));
        self.bounds_args(&mut invocation, exchange);
        invocation.arg(id.as_str());
        let done: i64 = self.bounded(invocation.invoke_async(&mut con)).await?;
        Ok(done == 1)
    }

    /// See [`super::Store::fail_reply`].
    pub async fn fail_reply(&self, call: &CallSid, id: &ReplyId) -> Result<(), StoreError> {
        let mut con = self.connection.clone();
        let mut invocation = FAIL.key(pending_key(call));
        invocation.arg(id.as_str());
        let _: i64 = self.bounded(invocation.invoke_async(&mut con)).await?;
        Ok(())
    }

    /// See [`super::Store::reply_state`]: the pending mark and the newest exchange, read in
    /// one transaction so a reply finishing in between cannot be missed.
    pub async fn reply_state(&self, call: &CallSid) -> Result<ReplyState, StoreError> {
        let mut con = self.connection.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("GET")
            .arg(pending_key(call))
            .cmd("LINDEX")
            .arg(history_key(call))
            .arg(-1);
        let (pending, newest): (Option<String>, Option<String>) =
            self.bounded(pipe.query_async(&mut con)).await?;
        Ok(match pending {
            Some(mark) if mark.starts_with("fail:") => ReplyState::Failed,
            Some(_) => ReplyState::Pending,
            None => ReplyState::Latest(
                newest
                    .map(|item| Exchange::decode(&item).map(|e| e.assistant))
                    .transpose()?,
            ),
        })
    }

    /// See [`super::Store::set_next_step`].
    pub async fn set_next_step(&self, call: &CallSid, step: &NextStep) -> Result<(), StoreError> {
        let mut con = self.connection.clone();
        let value = serde_json::to_string(step).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let _: () = self
            .bounded(
                redis::cmd("SET")
                    .arg(next_step_key(call))
                    .arg(value)
                    .arg("PX")
                    .arg(millis(self.options.next_step_ttl))
                    .query_async(&mut con),
            )
            .await?;
        Ok(())
    }

    /// See [`super::Store::take_next_step`]: `GET` and `DEL` in one transaction (rather than
    /// `GETDEL`, which Redis before 6.2 lacks).
    pub async fn take_next_step(&self, call: &CallSid) -> Result<Option<NextStep>, StoreError> {
        let mut con = self.connection.clone();
        let key = next_step_key(call);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("GET")
            .arg(&key)
            .cmd("DEL")
            .arg(&key)
            .ignore();
        let (stored,): (Option<String>,) = self.bounded(pipe.query_async(&mut con)).await?;
        stored
            .map(|json| serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    /// See [`super::Store::count_resumption`]: `INCR` and `PEXPIRE` in one transaction.
    pub async fn count_resumption(&self, call: &CallSid) -> Result<u32, StoreError> {
        let mut con = self.connection.clone();
        let key = resumptions_key(call);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("INCR")
            .arg(&key)
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(millis(self.options.next_step_ttl))
            .ignore();
        let (count,): (u64,) = self.bounded(pipe.query_async(&mut con)).await?;
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// See [`super::Store::ping`].
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut con = self.connection.clone();
        let _: String = self
            .bounded(redis::cmd("PING").query_async(&mut con))
            .await?;
        Ok(())
    }

    /// See [`super::Store::delete`].
    pub async fn delete(&self, call: &CallSid) -> Result<(), StoreError> {
        let mut con = self.connection.clone();
        let _: i64 = self
            .bounded(
                redis::cmd("DEL")
                    .arg(history_key(call))
                    .arg(pending_key(call))
                    .arg(next_step_key(call))
                    .arg(resumptions_key(call))
                    .query_async(&mut con),
            )
            .await?;
        Ok(())
    }

    /// ARGV[1..=4] of the append scripts: the exchange, the bounds, the TTL.
    fn bounds_args(&self, invocation: &mut redis::ScriptInvocation<'_>, exchange: &Exchange) {
        invocation
            .arg(exchange.encode())
            .arg(self.options.max_exchanges.max(1))
            .arg(self.options.max_bytes)
            .arg(millis(self.options.history_ttl));
    }

    /// Runs one Redis operation under our own deadline.
    async fn bounded<T>(
        &self,
        operation: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.options.op_timeout, operation).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(StoreError::Timeout(self.options.op_timeout)),
        }
    }
}

/// The list of a call's exchanges.
pub fn history_key(call: &CallSid) -> String {
    format!("{KEY_PREFIX}{{{call}}}:history")
}

/// A call's pending-reply mark.
pub fn pending_key(call: &CallSid) -> String {
    format!("{KEY_PREFIX}{{{call}}}:pending")
}

/// A call's next step.
pub fn next_step_key(call: &CallSid) -> String {
    format!("{KEY_PREFIX}{{{call}}}:next")
}

/// How many times a call's relay session was resumed (recently).
pub fn resumptions_key(call: &CallSid) -> String {
    format!("{KEY_PREFIX}{{{call}}}:resumed")
}

fn decode_all(items: &[String]) -> Result<Vec<Exchange>, StoreError> {
    items.iter().map(|item| Exchange::decode(item)).collect()
}

/// A TTL in whole milliseconds, at least 1 (Redis refuses 0).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_and_share_a_hash_tag() {
        let call = CallSid::parse("CA42").unwrap();
        assert_eq!(history_key(&call), "ivr-bridge:call:{CA42}:history");
        assert_eq!(pending_key(&call), "ivr-bridge:call:{CA42}:pending");
        assert_eq!(next_step_key(&call), "ivr-bridge:call:{CA42}:next");
    }

    #[test]
    fn a_bad_url_is_refused_without_connecting() {
        assert!(RedisStore::new("http://nope", StoreOptions::default()).is_err());
    }
}
