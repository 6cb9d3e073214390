//! `loadtest run | compare | hello`: see the README's "Compare caching strategies".

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use loadtest::{
    compare::{self, CompareOptions},
    engine::Plan,
    hello,
    report::Report,
    target::Target,
    workload::{DataOptions, DataSet, Mix, STANDARD, Workload},
};

#[derive(Debug, Parser)]
#[command(
    about = "Load generator for scalable-api: standard workloads, strategy comparisons, reports"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One workload against a running service.
    Run {
        /// The service's base URL; it must be loopback unless --allow-remote.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base_url: String,
        /// Send load to a non-loopback address (someone else's server, measured on purpose).
        #[arg(long)]
        allow_remote: bool,
        #[arg(long, default_value = "user_hot")]
        workload: Workload,
        /// Where the service's Prometheus metrics are, on the same base URL; `none`: skip
        /// SQL and cache figures.
        #[arg(long, default_value = "/metrics")]
        metrics_path: String,
        /// Also write report.md, report.json and chart.svg here.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Every workload once per setting of a knob, each on a freshly started service with an
    /// empty cache, plus the hello-world baseline; writes a report folder.
    Compare {
        /// Comma-separated workloads, or `all`.
        #[arg(long, default_value = "all")]
        workloads: String,
        /// `config.key=value1,value2,...`: the service setting to compare. Values are written
        /// as in the service's config; durations take a unit (`graphql.batch_window=1ms,5ms,20ms`).
        /// `ratelimit=off,gcra,token-bucket,...` compares the rate limits off and on with each
        /// algorithm, every budget out of reach (they are off in every other comparison).
        /// `service-bin=/tmp/before,/tmp/after` runs one build against another with the same
        /// settings (a code change measured in one run).
        #[arg(long, default_value = "cache.strategy=none,cache-aside,two-tier")]
        vary: String,
        /// The service binary, started as `serve` (build it with --release).
        #[arg(long, default_value = "target/release/scalable-api")]
        service_bin: PathBuf,
        /// Extra service environment for every run, `KEY=VALUE` (repeatable).
        #[arg(long = "service-env", value_name = "KEY=VALUE")]
        service_env: Vec<String>,
        /// The Redis the service caches in (each run gets its own key prefix there).
        #[arg(
            long,
            env = "SCALABLE_API_CACHE__REDIS_URL",
            default_value = "redis://127.0.0.1:55400"
        )]
        redis_url: String,
        /// Skip the hello-world baseline.
        #[arg(long)]
        no_baseline: bool,
        /// The report folder.
        #[arg(long, default_value = "loadtest/reports/latest")]
        out: PathBuf,
        #[arg(long, default_value = "Caching strategies compared")]
        title: String,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Re-render report.md and chart.svg of a report folder from its report.json.
    Render {
        /// The report folder.
        dir: PathBuf,
    },
    /// Serve the hello-world baseline (used by `compare`).
    Hello {
        #[arg(long, default_value = "127.0.0.1:8079")]
        addr: SocketAddr,
    },
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Simulated clients, one connection and one request in flight each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured window (`15s`, `500ms`, `2m`, or seconds).
    #[arg(long, default_value = "15s", value_parser = duration)]
    duration: Duration,
    /// Load before the window, not measured (fills caches and pools, wakes the JIT of the
    /// branch predictors).
    #[arg(long, default_value = "3s", value_parser = duration)]
    warmup: Duration,
    /// Stop after this many measured requests (or at --duration, whichever comes first).
    #[arg(long)]
    requests: Option<u64>,
    /// A request unanswered this long is an error.
    #[arg(long, default_value = "5s", value_parser = duration)]
    timeout: Duration,
    /// Open loop at this many requests/s in all (latency from when each request was due);
    /// without it, closed loop (each client sends when its previous answer arrived).
    #[arg(long)]
    rate: Option<f64>,
    /// Seeds the id choices and the hot set.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Size of the hot set of user_hot, user_posts and write_mix.
    #[arg(long, default_value_t = 1000)]
    hot: usize,
    /// Logged-in demo users of write_mix.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// The demo users' password (the seed's).
    #[arg(long, default_value = "demo-password")]
    password: String,
    /// The overload workload's classes by weight.
    #[arg(long, default_value_t = Mix::default())]
    mix: Mix,
    /// Sent as `Accept-Encoding` on every request (e.g. `gzip, br, zstd`), to measure
    /// compressed answers; the report's `bytes/answer` is what came over the wire.
    #[arg(long)]
    accept_encoding: Option<String>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl LoadArgs {
    fn plan(&self) -> Plan {
        Plan {
            connections: self.connections,
            warmup: self.warmup,
            duration: self.duration,
            requests: self.requests,
            timeout: self.timeout,
            seed: self.seed,
            rate: self.rate,
            accept_encoding: self.accept_encoding.clone(),
        }
    }

    fn data(&self) -> DataOptions {
        DataOptions {
            hot: self.hot,
            writers: self.writers,
            password: self.password.clone(),
            seed: self.seed,
            mix: self.mix,
        }
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| Duration::from_secs_f64(v * scale))
        .ok_or_else(|| format!("`{s}` is not a duration (15s, 500ms, 2m)"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let command_line = std::env::args()
        .map(|a| {
            if a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let report = match cli.command {
        Command::Hello { addr } => return hello::serve(addr).await,
        Command::Render { dir } => {
            let path = dir.join("report.json");
            let json = std::fs::read_to_string(&path)
                .with_context(|| format!("read {}", path.display()))?;
            let report: Report = serde_json::from_str(&json)
                .with_context(|| format!("{} is not a report", path.display()))?;
            report.write(&dir)?;
            report
        }
        Command::Run {
            base_url,
            allow_remote,
            workload,
            metrics_path,
            out,
            load,
        } => {
            let target = Target::resolve(&base_url, allow_remote).await?;
            let data = DataSet::load(&target, &[workload], &load.data()).await?;
            let metrics = (metrics_path != "none").then_some(metrics_path.as_str());
            let run = compare::measure(
                &target,
                metrics,
                workload,
                &data,
                &load.plan(),
                target.base(),
                !load.quiet,
            )
            .await?;
            let mut report = Report::new(
                format!("{workload} against {}", target.base()),
                command_line,
                load.plan(),
                load.data(),
                "target".to_owned(),
            );
            report.user_count = data.ids.len();
            report.runs.push(run);
            if let Some(out) = out {
                report.write(&out)?;
            }
            report
        }
        Command::Compare {
            workloads,
            vary,
            service_bin,
            service_env,
            redis_url,
            no_baseline,
            out,
            title,
            load,
        } => {
            let workloads = if workloads == "all" {
                STANDARD.to_vec()
            } else {
                workloads
                    .split(',')
                    .map(str::parse)
                    .collect::<anyhow::Result<_>>()?
            };
            let (knob, values) = vary
                .split_once('=')
                .context("--vary is `config.key=value1,value2`")?;
            let service_env = service_env
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("--service-env `{kv}` is not KEY=VALUE"))
                })
                .collect::<anyhow::Result<_>>()?;
            let binaries: Vec<PathBuf> = if knob == compare::BINARY_KNOB {
                values.split(',').map(PathBuf::from).collect()
            } else {
                vec![service_bin.clone()]
            };
            if let Some(binary) = binaries.iter().find(|binary| !binary.exists()) {
                bail!(
                    "{} does not exist: build it with `cargo build --release --bin scalable-api`",
                    binary.display()
                );
            }
            let options = CompareOptions {
                workloads,
                knob: knob.to_owned(),
                values: values.split(',').map(str::to_owned).collect(),
                service_bin,
                service_env,
                redis_url,
                hello_bin: (!no_baseline).then(std::env::current_exe).transpose()?,
                plan: load.plan(),
                data: load.data(),
                out: out.clone(),
                title,
                command: command_line,
                show_progress: !load.quiet,
            };
            let report = compare::compare(&options).await?;
            eprintln!("report written to {}", out.display());
            report
        }
    };
    print!("{}", report.table());
    let warnings = report.warnings();
    if !warnings.is_empty() {
        eprintln!("\nruns with errors:\n{warnings}");
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(duration("fast").is_err());
        assert!(duration("-1s").is_err());
    }
}
