//! Child processes that cannot outlive the test run.
//!
//! Three nets, because a test can end in three ways: the guard's `Drop` kills the child when a
//! test ends or panics; an `atexit` hook kills children still registered when the test binary
//! exits (shared fixtures held in statics are never dropped); and every child is started with
//! `PR_SET_PDEATHSIG`, so the kernel kills it if the test process itself is killed. The death
//! signal follows the thread that forked, so all children are forked by one thread that lives
//! as long as the process.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();

extern "C" fn kill_live_children() {
    if let Ok(live) = LIVE.lock() {
        for &pid in live.iter() {
            // SAFETY: plain kill(2) on pids this process started.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    SPAWNER.get_or_init(|| {
        // SAFETY: registers a plain C function once.
        unsafe {
            libc::atexit(kill_live_children);
        }
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    // SAFETY: prctl is async-signal-safe and touches only the child.
                    unsafe {
                        command.pre_exec(|| {
                            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                            Ok(())
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    })
}

/// A running child process, killed when dropped.
pub struct ChildGuard {
    child: Child,
    name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, command: Command) -> io::Result<ChildGuard> {
        let (tx, rx) = mpsc::channel();
        spawner()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((command, tx))
            .map_err(|_| io::Error::other("spawner thread gone"))?;
        let child = rx
            .recv()
            .map_err(|_| io::Error::other("spawner thread gone"))??;
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.id());
        Ok(ChildGuard {
            child,
            name: name.to_string(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `Some(status)` if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pid = self.child.id();
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&p| p != pid);
    }
}

/// Resident set size of a process in bytes (Linux `/proc`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
