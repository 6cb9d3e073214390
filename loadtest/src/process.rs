//! Child processes under test: the service (once per setting) and the hello-world baseline.
//!
//! Each run gets a fresh process, so nothing in memory (the two-tier L1, pools, loaders)
//! carries over, and a fresh Redis key prefix, so the shared cache starts empty too; the
//! prefix's keys are deleted when the run ends.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use hyper::{Method, StatusCode};
use tokio::process::{Child, Command};

use crate::target::Target;

/// How to start one process: it must listen on the address it is given.
#[derive(Debug, Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Answers 200 here once it can take load.
    pub ready_path: String,
    /// stdout and stderr go here.
    pub log: PathBuf,
}

/// A running child; stopped (SIGTERM, then SIGKILL) by [`Running::stop`] or on drop.
pub struct Running {
    child: Child,
    pub target: Target,
    log: PathBuf,
}

/// `VmHWM:    58120 kB` in a `/proc/<pid>/status`, in KiB.
fn peak_rss_of(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// A free loopback port: bind port 0 and let it go. Another process could take it before
/// the child binds it; the child then fails to start and says so in its log.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl Launch {
    /// Starts the process with `{addr}` in its arguments and environment replaced by a free
    /// loopback address, and waits (up to `patience`) until it is ready.
    pub async fn start(&self, patience: Duration) -> anyhow::Result<Running> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::File::create(&self.log)
            .with_context(|| format!("create {}", self.log.display()))?;
        let mut command = Command::new(&self.program);
        command
            .args(self.args.iter().map(|a| a.replace("{addr}", &addr)))
            .envs(
                self.env
                    .iter()
                    .map(|(k, v)| (k, v.replace("{addr}", &addr))),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("start {}", self.program.display()))?;
        let target = Target::resolve(&format!("http://{addr}"), false).await?;
        let mut running = Running {
            child,
            target,
            log: self.log.clone(),
        };
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Some(status) = running.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was ready; its log:\n{}",
                    self.program.display(),
                    tail(&running.log)
                );
            }
            if let Ok((StatusCode::OK, _)) = running
                .target
                .fetch(Method::GET, &self.ready_path, None, None)
                .await
            {
                return Ok(running);
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = running.stop().await;
                bail!(
                    "{} was not ready at {}{} within {patience:?}; its log:\n{}",
                    self.program.display(),
                    running.target.base(),
                    self.ready_path,
                    tail(&running.log)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Running {
    /// SIGTERM (the service drains in-flight requests), then SIGKILL after 10 s.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        if let Some(pid) = self.child.id() {
            // `kill` the command, not libc: the workspace forbids unsafe code.
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(())
    }

    /// The process's peak resident memory so far (`VmHWM`), in KiB; `None` once it has exited
    /// or where `/proc` has no such line.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        peak_rss_of(&status)
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

/// The last lines of a log, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Deletes every key under `prefix:` (SCAN + UNLINK, never FLUSHDB: the Redis may be shared
/// with other services or tests). Returns how many were deleted.
pub async fn delete_keys(redis_url: &str, prefix: &str) -> anyhow::Result<u64> {
    let client =
        redis::Client::open(redis_url).with_context(|| format!("Redis URL {redis_url}"))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connect to Redis at {redis_url}"))?;
    let pattern = format!("{prefix}:*");
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await?;
            deleted += n;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// Keys under `prefix:` (for tests and checks).
pub async fn count_keys(redis_url: &str, prefix: &str) -> anyhow::Result<usize> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await?;
    Ok(keys.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_rss_is_read_from_vmhwm() {
        let status =
            "Name:\tscalable-api\nVmPeak:\t  900000 kB\nVmHWM:\t   58120 kB\nVmRSS:\t   51000 kB\n";
        assert_eq!(peak_rss_of(status), Some(58_120));
        assert_eq!(peak_rss_of("Name:\tx\n"), None);
        assert_eq!(peak_rss_of("VmHWM:\t lots kB\n"), None);
        let own = std::fs::read_to_string("/proc/self/status").expect("/proc on Linux");
        assert!(peak_rss_of(&own).is_some_and(|kib| kib > 0));
    }
}
