//! Real Redis behind real Webdis (Debian packages `redis-server` and `webdis`, installed by
//! `e2e/services/redis.sh`), on free loopback ports, from config templates such as the ones in
//! `envoy-configs/` (placeholders `${REDIS_PORT}`, `${WEBDIS_PORT}`, `${DIR}`).
//!
//! Both processes end with the value (see [`crate::process`]). Tests can also stop Redis, or
//! freeze it (SIGSTOP) to see how a plugin copes with a store that is down or slow.

use crate::config::render;
use crate::paths;
use crate::process::ChildGuard;
use serde_json::Value;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisWebdis {
    redis: Option<ChildGuard>,
    _webdis: ChildGuard,
    pub redis_port: u16,
    /// Where Webdis listens: the address of the Envoy cluster plugins call.
    pub webdis: SocketAddr,
    pub dir: PathBuf,
    /// `user:password` when Webdis's ACL takes `EVAL` only with HTTP Basic credentials.
    basic_auth: Option<String>,
}

impl RedisWebdis {
    /// Starts Redis and Webdis from the two templates and waits until a Lua `EVAL` goes through.
    pub fn start(redis_template: &Path, webdis_template: &Path) -> RedisWebdis {
        let mut last_error = String::new();
        // A port picked free can be taken before the service binds it: try again on new ones.
        for _ in 0..5 {
            match Self::try_start(redis_template, webdis_template) {
                Ok(services) => return services,
                Err(err) => last_error = err,
            }
        }
        panic!("Redis and Webdis did not start: {last_error}");
    }

    fn try_start(redis_template: &Path, webdis_template: &Path) -> Result<RedisWebdis, String> {
        let dir = paths::scratch_dir("redis");
        let (redis_port, webdis_port) = (free_port(), free_port());
        let vars = [
            ("REDIS_PORT", redis_port.to_string()),
            ("WEBDIS_PORT", webdis_port.to_string()),
            ("DIR", dir.display().to_string()),
        ];
        let write = |template: &Path, name: &str| -> Result<PathBuf, String> {
            let text = std::fs::read_to_string(template)
                .map_err(|e| format!("{}: {e}", template.display()))?;
            let path = dir.join(name);
            std::fs::write(&path, render(&text, &vars)?).map_err(|e| e.to_string())?;
            Ok(path)
        };
        let redis_conf = write(redis_template, "redis.conf")?;
        let webdis_conf = write(webdis_template, "webdis.json")?;
        let basic_auth = eval_credentials(&webdis_conf);
        let redis = spawn("redis-server", &redis_conf, &dir)?;
        wait_until(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", redis_port)).is_ok()
        })
        .map_err(|_| format!("redis-server did not listen on {redis_port}"))?;
        let webdis = spawn("webdis", &webdis_conf, &dir)?;
        let services = RedisWebdis {
            redis: Some(redis),
            _webdis: webdis,
            redis_port,
            webdis: SocketAddr::from(([127, 0, 0, 1], webdis_port)),
            dir,
            basic_auth,
        };
        wait_until(Duration::from_secs(10), || {
            services
                .try_eval("return 1", &[], &[])
                .is_ok_and(|v| v == 1)
        })
        .map_err(|_| format!("webdis did not answer on {webdis_port}"))?;
        Ok(services)
    }

    /// Runs a Lua script through Webdis, as a plugin would; the `EVAL` result.
    pub fn eval(&self, script: &str, keys: &[&str], args: &[&str]) -> Value {
        self.try_eval(script, keys, args)
            .unwrap_or_else(|e| panic!("EVAL through webdis: {e}"))
    }

    fn try_eval(&self, script: &str, keys: &[&str], args: &[&str]) -> Result<Value, String> {
        let count = keys.len().to_string();
        let mut all = vec!["EVAL", script, count.as_str()];
        all.extend_from_slice(keys);
        all.extend_from_slice(args);
        let body = all
            .iter()
            .map(|a| percent_encode(a))
            .collect::<Vec<_>>()
            .join("/");
        let mut request = reqwest::blocking::Client::new()
            .post(format!("http://{}/", self.webdis))
            .body(body)
            .timeout(Duration::from_secs(5));
        if let Some((user, password)) = self.basic_auth.as_deref().and_then(|c| c.split_once(':')) {
            request = request.basic_auth(user, Some(password));
        }
        let reply = request.send().map_err(|e| e.to_string())?;
        let status = reply.status();
        let json: Value = reply.json().map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("webdis answered {status}: {json}"));
        }
        Ok(json["EVAL"].clone())
    }

    /// A plain command through Webdis (`GET /CMD/args`): its HTTP status, as Webdis's ACL decides.
    pub fn command_status(&self, path: &str) -> u16 {
        crate::client::get(&format!("http://{}/{path}", self.webdis))
            .map(|r| r.status)
            .unwrap_or(0)
    }

    /// Stops Redis for good: Webdis stays up and answers errors.
    pub fn stop_redis(&mut self) {
        self.redis = None;
    }

    /// Freezes Redis (SIGSTOP): connections stay open and nothing answers.
    pub fn freeze_redis(&self) {
        if let Some(redis) = &self.redis {
            redis.signal(libc::SIGSTOP);
        }
    }

    pub fn thaw_redis(&self) {
        if let Some(redis) = &self.redis {
            redis.signal(libc::SIGCONT);
        }
    }
}

impl Drop for RedisWebdis {
    fn drop(&mut self) {
        // A frozen process ignores nothing but SIGKILL; thaw it so it also exits cleanly.
        self.thaw_redis();
    }
}

fn spawn(program: &str, config: &Path, dir: &Path) -> Result<ChildGuard, String> {
    let log =
        std::fs::File::create(dir.join(format!("{program}.out"))).map_err(|e| e.to_string())?;
    let mut command = Command::new(program);
    command
        .arg(config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    ChildGuard::spawn(program, command)
        .map_err(|e| format!("{program}: {e} (run `make services` to install it)"))
}

/// The HTTP Basic credentials of the Webdis ACL entry that enables `EVAL`, if it has one.
fn eval_credentials(webdis_conf: &Path) -> Option<String> {
    let config: Value = serde_json::from_str(&std::fs::read_to_string(webdis_conf).ok()?).ok()?;
    config["acl"].as_array()?.iter().find_map(|entry| {
        let enables_eval = entry["enabled"]
            .as_array()
            .is_some_and(|commands| commands.iter().any(|c| c == "EVAL"));
        enables_eval
            .then(|| entry["http_basic_auth"].as_str().map(str::to_owned))
            .flatten()
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<(), ()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(())
}

/// Webdis splits arguments on `/`: everything but unreserved characters is escaped.
fn percent_encode(arg: &str) -> String {
    arg.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
