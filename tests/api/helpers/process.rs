//! The service as a real process (the built `scalable-api serve`) over a [`TestApp`]'s
//! databases and Redis prefixes: for tests that need what only a process has, such as a
//! SIGTERM and its drain, an exit, a restart on the same port, or a real load balancer in
//! front.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use reqwest::StatusCode;
use scalable_api::config::SecretUrl;
use tokio::process::{Child, Command};

use super::TestApp;

impl TestApp {
    /// The service's config file for this test's databases (a child process cannot take the
    /// in-memory config `TestApp` built). The load-shedding limit is out of reach, as in
    /// `TestApp` (other tests' load makes latency swing here); a test about shedding sets its
    /// own through the environment, which wins over the file. Redis settings are not in it:
    /// [`TestApp::launch`] passes them, and `loadtest compare` sets a prefix per run.
    pub fn config_file(&self) -> String {
        let config = &self.state.config;
        let mut toml = format!(
            "[shedding]\ninitial_limit = 100000\nmin_limit = 100000\nmax_limit = 100000\n\n\
             [db]\ndirectory_url = \"{}\"\npool_max_connections = 5\n\n\
             [db.replicas]\nmax_lag_bytes = {max}\nmax_lag = \"1000years\"\n",
            config.db.directory_url.expose(),
            max = i64::MAX
        );
        for shard in &config.db.shards {
            toml.push_str(&format!(
                "\n[[db.shards]]\nid = {}\nfirst_id = {}\nlast_id = {}\nprimary = \"{}\"\nreplicas = {:?}\naccepts_new_users = true\n",
                shard.id,
                shard.first_id,
                shard.last_id,
                shard.primary.expose(),
                shard.replicas.iter().map(SecretUrl::expose).collect::<Vec<_>>()
            ));
        }
        toml
    }

    /// How to start `scalable-api serve` processes over this test's databases and this
    /// `TestApp`'s Redis prefixes (what one writes to the cache, the others read). The config
    /// file goes in `dir`, and each process's log beside it.
    pub fn launch(&self, dir: &Path) -> Launch {
        std::fs::create_dir_all(dir).expect("the test's directory can be created");
        let config_path = dir.join("service.toml");
        std::fs::write(&config_path, self.config_file()).expect("the config file is written");
        let config = &self.state.config;
        let env = vec![
            (
                "SCALABLE_API_CONFIG".to_owned(),
                config_path.display().to_string(),
            ),
            (
                "SCALABLE_API_CACHE__REDIS_URL".to_owned(),
                self.stack.redis.clone(),
            ),
            (
                "SCALABLE_API_CACHE__KEY_PREFIX".to_owned(),
                config.cache.key_prefix.clone(),
            ),
            (
                "SCALABLE_API_RATELIMIT__REDIS_URL".to_owned(),
                self.stack.redis.clone(),
            ),
            (
                "SCALABLE_API_RATELIMIT__KEY_PREFIX".to_owned(),
                config.ratelimit.key_prefix.clone(),
            ),
            // Warnings only: a process under load would otherwise write a log line per request.
            (
                "SCALABLE_API_TELEMETRY__LOG_FILTER".to_owned(),
                "warn".to_owned(),
            ),
        ];
        Launch {
            dir: dir.to_owned(),
            env,
        }
    }
}

/// What [`TestApp::launch`] prepared: the environment of every process it starts.
#[derive(Clone)]
pub struct Launch {
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl Launch {
    /// The same launch with one more variable (it wins over the file and earlier ones).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Runs `scalable-api ARGS` to its end (stdin closed, as in a script) and returns its
    /// exit status and its output (stdout then stderr).
    pub async fn run(&self, args: &[&str]) -> (ExitStatus, String) {
        let output = Command::new(env!("CARGO_BIN_EXE_scalable-api"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .await
            .expect("the service binary runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status, text)
    }

    /// Starts `scalable-api serve` on `addr`, its output in `<dir>/<name>.log` (appended to,
    /// so a restarted process keeps its predecessor's lines). Not ready yet: see
    /// [`ServiceProcess::wait_ready`].
    pub fn start(&self, name: &str, addr: SocketAddr) -> ServiceProcess {
        let log = self.dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("the process log can be opened");
        let child = Command::new(env!("CARGO_BIN_EXE_scalable-api"))
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("SCALABLE_API_HTTP__ADDR", addr.to_string())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("the log file handle can be cloned"))
            .stderr(file)
            // A failing test must not leave a server behind: dropped means killed.
            .kill_on_drop(true)
            .spawn()
            .expect("the service binary starts");
        ServiceProcess {
            name: name.to_owned(),
            child,
            addr,
            log,
        }
    }
}

/// A running `scalable-api serve`; killed (SIGKILL) when dropped.
pub struct ServiceProcess {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl ServiceProcess {
    /// Waits until `/readyz` answers 200 on the process's own address, for at most
    /// `patience`; panics with the log's tail if it exits or is still not ready by then.
    pub async fn wait_ready(&mut self, patience: Duration) {
        let client = reqwest::Client::new();
        let url = format!("http://{}/readyz", self.addr);
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before it was ready; its log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            let answer = client
                .get(&url)
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if answer.is_ok_and(|a| a.status() == StatusCode::OK) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} was not ready at {url} within {patience:?}; its log:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM (the drain starts) and waits, for at most `patience`, until the process
    /// has exited; returns how it exited.
    pub async fn terminate(&mut self, patience: Duration) -> ExitStatus {
        let pid = self
            .child
            .id()
            .unwrap_or_else(|| panic!("{} is still running when terminated", self.name));
        // `kill` the command, not libc: the workspace forbids unsafe code.
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("`kill` runs");
        assert!(sent.success(), "SIGTERM to {} ({pid})", self.name);
        match tokio::time::timeout(patience, self.child.wait()).await {
            Ok(status) => status.expect("the child's exit status is readable"),
            Err(_) => panic!(
                "{} had not exited {patience:?} after SIGTERM; its log:\n{}",
                self.name,
                self.log_tail()
            ),
        }
    }

    /// The last lines of the process's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// A free loopback address: bind port 0 and let it go. Another process could take it before
/// the child binds it; the child then fails to start and its log says so.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
}
