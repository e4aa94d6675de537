//! The cluster-wide store: Redis through Webdis, one atomic Lua `EVAL` per decision, so every
//! Envoy sharing the Redis shares the quota.
//!
//! Keys: `aigw:rl:<counter>:<t|q><period>:<window start>` for token and request windows
//! (expiring with their window) and `aigw:rl:<counter>:inflight`, a sorted set of concurrency
//! leases scored by when they lapse. The plugin only ever sends `EVAL` with the two scripts
//! below; inside them Redis runs `GET`, `INCRBY`, `PEXPIRE`, `ZADD`, `ZREM`,
//! `ZREMRANGEBYSCORE` and `ZCARD` on `aigw:rl:*` keys, which is what the ACLs in the README allow.

use crate::callout::Callout;
use crate::quota::ledger::{Adjustment, Ask, Limited, Verdict, WindowState};
use crate::quota::window::{Kind, Window};
use crate::webdis;
use serde_json::Value;
use std::time::Duration;

/// Where the store is.
#[derive(Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// The Envoy cluster of Webdis.
    pub cluster: String,
    pub timeout: Duration,
    pub database: u32,
    /// `Basic …` for Webdis's `http_basic_auth` ACLs.
    pub authorization: Option<String>,
}

pub const KEY_PREFIX: &str = "aigw:rl:";

/// Checks every window and concurrency set, then reserves in all of them or none.
/// ARGV: now, window count, set count, lease id, lease expiry, then per window its limit, amount
/// and time to live, then per set its maximum.
const RESERVE: &str = r"local now, nw, ns = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local used = {1}
for i = 1, nw do
  local a = 3 * i + 3
  local limit, amount = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local u = tonumber(redis.call('GET', KEYS[i]) or '0')
  if u + math.max(amount, 1) > limit then return {0, i, u} end
  used[i + 1] = u + amount
end
for j = 1, ns do
  local key = KEYS[nw + j]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local n = redis.call('ZCARD', key)
  if n >= tonumber(ARGV[3 * nw + 5 + j]) then return {0, nw + j, n} end
end
for i = 1, nw do
  local a = 3 * i + 3
  redis.call('INCRBY', KEYS[i], ARGV[a + 1])
  redis.call('PEXPIRE', KEYS[i], ARGV[a + 2])
end
for j = 1, ns do
  redis.call('ZADD', KEYS[nw + j], ARGV[5], ARGV[4])
  redis.call('PEXPIRE', KEYS[nw + j], ARGV[5] - now)
end
return used";

/// Applies token corrections (never below zero) and gives concurrency leases back.
/// ARGV: correction count, release count, then per correction its delta and time to live, then
/// per release the lease id.
const SETTLE: &str = r"local nc, nr = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 1, nc do
  local v = redis.call('INCRBY', KEYS[i], ARGV[2 * i + 1])
  if v < 0 then redis.call('INCRBY', KEYS[i], -v) end
  redis.call('PEXPIRE', KEYS[i], ARGV[2 * i + 2])
end
for j = 1, nr do
  redis.call('ZREM', KEYS[nc + j], ARGV[2 * nc + 2 + j])
end
return nc + nr";

/// Window keys outlive their window by this much, so that a late correction finds them.
const GRACE_MS: u64 = 5_000;

pub fn window_key(id: &str, window: &Window, start: u64) -> String {
    let kind = match window.kind {
        Kind::Tokens => 't',
        Kind::Requests => 'q',
    };
    format!("{KEY_PREFIX}{id}:{kind}{}:{start}", window.period_secs)
}

pub fn inflight_key(id: &str) -> String {
    format!("{KEY_PREFIX}{id}:inflight")
}

fn ttl_ms(window: &Window, now_ms: u64) -> u64 {
    window.reset_ms(now_ms) + GRACE_MS
}

/// What a reply's positions refer to: each window (limit index, window) then each set.
pub struct Layout {
    windows: Vec<(usize, Window)>,
    sets: Vec<usize>,
    tokens: u64,
}

/// The `EVAL` that decides `ask`, and how to read its reply.
pub fn reserve(config: &RedisConfig, ask: &Ask) -> (Callout, Layout) {
    let mut keys = Vec::new();
    let mut window_args = Vec::new();
    let mut layout = Layout {
        windows: Vec::new(),
        sets: Vec::new(),
        tokens: ask.tokens,
    };
    for (i, m) in ask.limits.iter().enumerate() {
        for w in &m.limits.windows {
            keys.push(window_key(&m.id, w, w.start(ask.now_ms)));
            window_args.extend(
                [w.limit, w.amount(ask.tokens), ttl_ms(w, ask.now_ms)].map(|n| n.to_string()),
            );
            layout.windows.push((i, *w));
        }
    }
    let mut set_args = Vec::new();
    for (i, m) in ask.limits.iter().enumerate() {
        if let Some(max) = m.limits.max_concurrent {
            keys.push(inflight_key(&m.id));
            set_args.push(max.to_string());
            layout.sets.push(i);
        }
    }
    let mut args = vec![
        ask.now_ms.to_string(),
        layout.windows.len().to_string(),
        layout.sets.len().to_string(),
        ask.lease.id.to_string(),
        ask.lease.expires_ms.to_string(),
    ];
    args.extend(window_args);
    args.extend(set_args);
    (eval(config, RESERVE, &keys, &args), layout)
}

/// Reads the reply of [`reserve`].
pub fn verdict(layout: &Layout, body: &[u8]) -> Result<Verdict, String> {
    let reply = webdis::reply("EVAL", body)?;
    let numbers: Vec<u64> = reply
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let expected_len = reply.as_array().map_or(0, Vec::len);
    match numbers.as_slice() {
        [1, used @ ..] if used.len() == layout.windows.len() && numbers.len() == expected_len => {
            Ok(Verdict::Admitted(
                layout
                    .windows
                    .iter()
                    .zip(used)
                    .map(|((_, window), used)| WindowState {
                        window: *window,
                        used: *used,
                    })
                    .collect(),
            ))
        }
        [0, index, used] => {
            let index = (*index as usize).checked_sub(1).ok_or("reply index 0")?;
            let limited = match layout.windows.get(index) {
                Some((limit, window)) => Limited {
                    limit: *limit,
                    window: Some(*window),
                    used: *used,
                    requested: window.amount(layout.tokens),
                },
                None => Limited {
                    limit: *layout
                        .sets
                        .get(index - layout.windows.len())
                        .ok_or("reply index out of range")?,
                    window: None,
                    used: *used,
                    requested: 1,
                },
            };
            Ok(Verdict::Limited(limited))
        }
        _ => Err(format!("unexpected reply {reply}")),
    }
}

/// Corrections and lease releases of finished requests, in one `EVAL`.
#[derive(Debug, Default)]
pub struct Settlement {
    keys: Vec<String>,
    deltas: Vec<String>,
    releases: Vec<(String, u32)>,
}

impl Settlement {
    pub fn add(&mut self, adjustments: &[Adjustment], slots: &[String], lease: u32, now_ms: u64) {
        for a in adjustments {
            self.keys.push(window_key(&a.id, &a.window, a.start));
            self.deltas.push(a.delta.to_string());
            self.deltas.push(ttl_ms(&a.window, now_ms).to_string());
        }
        self.releases
            .extend(slots.iter().map(|id| (inflight_key(id), lease)));
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.releases.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len() + self.releases.len()
    }

    pub fn into_callout(self, config: &RedisConfig) -> Callout {
        let mut keys = self.keys;
        let mut args = vec![keys.len().to_string(), self.releases.len().to_string()];
        args.extend(self.deltas);
        for (key, lease) in self.releases {
            keys.push(key);
            args.push(lease.to_string());
        }
        eval(config, SETTLE, &keys, &args)
    }
}

fn eval(config: &RedisConfig, script: &str, keys: &[String], args: &[String]) -> Callout {
    let count = keys.len().to_string();
    let mut all: Vec<&str> = vec!["EVAL", script, &count];
    all.extend(keys.iter().map(String::as_str));
    all.extend(args.iter().map(String::as_str));
    let mut callout = webdis::command(&config.cluster, &all, config.timeout);
    if config.database != 0 {
        callout.body = [format!("{}/", config.database).into_bytes(), callout.body].concat();
    }
    match &config.authorization {
        Some(auth) => callout.header("authorization", auth),
        None => callout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::ledger::Lease;
    use crate::quota::Limits;
    use crate::quota::Matched;
    use std::time::Duration;

    fn config() -> RedisConfig {
        RedisConfig {
            cluster: "webdis".into(),
            timeout: Duration::from_millis(100),
            database: 2,
            authorization: Some("Basic dTpw".into()),
        }
    }

    fn limits() -> Vec<Matched> {
        let minute = Window {
            kind: Kind::Tokens,
            period_secs: 60,
            limit: 1000,
        };
        vec![
            Matched {
                rule: "a".into(),
                id: "a/consumer/alice".into(),
                limits: Limits {
                    windows: vec![
                        minute,
                        Window {
                            kind: Kind::Requests,
                            period_secs: 1,
                            limit: 3,
                        },
                    ],
                    max_concurrent: Some(2),
                },
            },
            Matched {
                rule: "b".into(),
                id: "b/global/".into(),
                limits: Limits {
                    windows: vec![Window {
                        limit: 5000,
                        ..minute
                    }],
                    max_concurrent: None,
                },
            },
        ]
    }

    fn decode(body: &[u8]) -> Vec<String> {
        let text = String::from_utf8(body.to_vec()).unwrap();
        text.split('/')
            .map(|arg| {
                let mut out = Vec::new();
                let bytes = arg.as_bytes();
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] == b'%' {
                        out.push(u8::from_str_radix(&arg[i + 1..i + 3], 16).unwrap());
                        i += 3;
                    } else {
                        out.push(bytes[i]);
                        i += 1;
                    }
                }
                String::from_utf8(out).unwrap()
            })
            .collect()
    }

    #[test]
    fn one_eval_names_every_window_and_set() {
        let limits = limits();
        let ask = Ask {
            limits: &limits,
            tokens: 120,
            now_ms: 90_500,
            lease: Lease {
                id: 9,
                expires_ms: 690_500,
            },
        };
        let (callout, layout) = reserve(&config(), &ask);
        let args = decode(&callout.body);
        assert_eq!(args[0], "2", "database");
        assert_eq!((args[1].as_str(), args[2].as_str()), ("EVAL", RESERVE));
        assert_eq!(args[3], "4", "three windows and one set");
        assert_eq!(
            &args[4..8],
            [
                "aigw:rl:a/consumer/alice:t60:60",
                "aigw:rl:a/consumer/alice:q1:90",
                "aigw:rl:b/global/:t60:60",
                "aigw:rl:a/consumer/alice:inflight"
            ]
        );
        assert_eq!(&args[8..13], ["90500", "3", "1", "9", "690500"]);
        assert_eq!(
            &args[13..16],
            ["1000", "120", "34500"],
            "limit, amount, ttl"
        );
        assert_eq!(&args[16..19], ["3", "1", "5500"]);
        assert_eq!(args[22], "2", "concurrency maximum");
        assert!(callout
            .headers
            .contains(&("authorization".into(), "Basic dTpw".into())));
        assert_eq!(layout.sets, [0]);
    }

    #[test]
    fn replies_become_verdicts() {
        let limits = limits();
        let ask = Ask {
            limits: &limits,
            tokens: 120,
            now_ms: 0,
            lease: Lease {
                id: 1,
                expires_ms: 1,
            },
        };
        let (_, layout) = reserve(&config(), &ask);
        let Verdict::Admitted(states) = verdict(&layout, br#"{"EVAL":[1,620,2,4120]}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            states.iter().map(|s| s.remaining()).collect::<Vec<_>>(),
            [380, 1, 880]
        );
        let Verdict::Limited(l) = verdict(&layout, br#"{"EVAL":[0,3,4950]}"#).unwrap() else {
            panic!()
        };
        assert_eq!(
            (l.limit, l.window.unwrap().limit, l.used, l.requested),
            (1, 5000, 4950, 120)
        );
        let Verdict::Limited(l) = verdict(&layout, br#"{"EVAL":[0,4,2]}"#).unwrap() else {
            panic!()
        };
        assert_eq!((l.limit, l.window, l.used), (0, None, 2));
        assert!(verdict(&layout, br#"{"EVAL":[0,9,1]}"#).is_err());
        assert!(verdict(&layout, br#"{"EVAL":[1,2]}"#).is_err());
        assert!(verdict(&layout, br#"{"EVAL":[false,"NOPERM"]}"#)
            .unwrap_err()
            .contains("NOPERM"));
    }

    #[test]
    fn settlements_batch_corrections_and_releases() {
        let mut s = Settlement::default();
        let w = Window {
            kind: Kind::Tokens,
            period_secs: 60,
            limit: 1000,
        };
        s.add(
            &[Adjustment {
                id: "a/global/".into(),
                window: w,
                start: 60,
                delta: -70,
            }],
            &["a/global/".into()],
            7,
            61_000,
        );
        s.add(&[], &["b/ip/::1".into()], 8, 61_000);
        assert_eq!(s.len(), 3);
        let args = decode(&s.into_callout(&config()).body);
        assert_eq!(args[2], SETTLE);
        assert_eq!(
            &args[3..7],
            [
                "3",
                "aigw:rl:a/global/:t60:60",
                "aigw:rl:a/global/:inflight",
                "aigw:rl:b/ip/::1:inflight"
            ]
        );
        assert_eq!(&args[7..], ["1", "2", "-70", "64000", "7", "8"]);
    }
}
