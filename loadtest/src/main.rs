//! `loadtest run | compare | hello`: see the README's "Compare caching strategies".

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail, ensure};
use clap::{Args, Parser, Subcommand};
use loadtest::{
    compare::{self, CompareOptions},
    engine::{Plan, parse_duration},
    faults::{FaultSpec, Injector, Stack, Timeline},
    hello,
    report::Report,
    target::Target,
    timeline::{self, FaultReport, FaultRun},
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
        faults: FaultArgs,
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

/// Faults during the run (docs/hardening.md): with at least one `--fault`, the report has the
/// run per second, the service's fallbacks, and a row per fault.
#[derive(Debug, Args)]
struct FaultArgs {
    /// `AT:VERB:NODE` or `AT:VERB:NODE:FOR` (repeatable): at AT into the measured window,
    /// `scripts/stack VERB NODE`; with FOR, undone (start, resume) FOR later. VERB: stop,
    /// start, pause, resume; NODE: redis, shard0-primary, shard0-replica, shard1-primary,
    /// shard1-replica. Whatever is still stopped or paused at the end is undone, also after
    /// an error or Ctrl-C. E.g. `--fault 10s:stop:shard1-replica:8s --fault 20s:pause:redis:5s`.
    #[arg(long = "fault", value_name = "AT:VERB:NODE[:FOR]")]
    faults: Vec<FaultSpec>,
    /// The stack's control script.
    #[arg(long, default_value = "scripts/stack")]
    stack_script: PathBuf,
    /// The stack the service under test runs on: its port base. No default: a fault stops a
    /// real process, and must land on the stack meant.
    #[arg(long, env = "SCALABLE_API_STACK_PORT_BASE")]
    stack_port_base: Option<u16>,
    /// Its directory (the script's default for the port base when unset).
    #[arg(long, env = "SCALABLE_API_STACK_DIR")]
    stack_dir: Option<String>,
    /// How often the service's `/metrics` is read during a run over time (5s is plenty for a
    /// long soak).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    scrape_every: Duration,
    /// Report the run second by second (as with faults, and the soak), without faults.
    #[arg(long)]
    timeline: bool,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Simulated clients, one connection and one request in flight each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Measured window (`15s`, `500ms`, `2m`, or seconds).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    duration: Duration,
    /// Load before the window, not measured (fills caches and pools, wakes the JIT of the
    /// branch predictors).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    warmup: Duration,
    /// Stop after this many measured requests (or at --duration, whichever comes first).
    #[arg(long)]
    requests: Option<u64>,
    /// A request unanswered this long is an error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
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
    /// Each client sends back the `X-Consistency-Token` of its last write (read-your-writes),
    /// so the staleness auditor's figures show what such a client sees.
    #[arg(long)]
    carry_token: bool,
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
            carry_token: self.carry_token,
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
            if let Ok(faults) = serde_json::from_str::<FaultReport>(&json) {
                faults.write(&dir)?;
                print!("{}", faults.fault_table());
                return Ok(());
            }
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
            faults,
            load,
        } if !faults.faults.is_empty() || faults.timeline || workload == Workload::Soak => {
            return run_over_time(
                &base_url,
                allow_remote,
                workload,
                &metrics_path,
                out,
                faults,
                &load,
                command_line,
            )
            .await;
        }
        Command::Run {
            base_url,
            allow_remote,
            workload,
            metrics_path,
            out,
            faults: _,
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

/// `run` with `--fault`, `--timeline` or the soak: the report goes second by second. Faults are
/// undone whatever happens (an error, Ctrl-C, SIGTERM), and a fault not undone is named in the
/// report and in the exit status.
#[expect(
    clippy::too_many_arguments,
    reason = "the run command's arguments, once"
)]
async fn run_over_time(
    base_url: &str,
    allow_remote: bool,
    workload: Workload,
    metrics_path: &str,
    out: Option<PathBuf>,
    args: FaultArgs,
    load: &LoadArgs,
    command_line: String,
) -> anyhow::Result<()> {
    ensure!(
        metrics_path != "none",
        "a run over time reads the service's /metrics"
    );
    let plan = load.plan();
    let timeline = Timeline::new(&args.faults, plan.duration)?;
    let stack = if timeline.events.is_empty() {
        None
    } else {
        let Some(port_base) = args.stack_port_base else {
            bail!(
                "--fault stops and pauses the stack's processes: say which stack \
                 (SCALABLE_API_STACK_PORT_BASE and SCALABLE_API_STACK_DIR, or --stack-port-base)"
            );
        };
        let stack = Stack {
            script: args.stack_script,
            dir: args.stack_dir,
            port_base,
        };
        stack.check().await?;
        Some(stack)
    };
    let target = Target::resolve(base_url, allow_remote).await?;
    let data = DataSet::load(&target, &[workload], &load.data()).await?;
    let injector = stack.clone().map(|stack| Arc::new(Injector::new(stack)));
    let run = FaultRun {
        metrics_path,
        workload,
        data: &data,
        plan: &plan,
        timeline: &timeline,
        injector: injector.clone(),
        scrape_every: args.scrape_every,
    };
    let measured = tokio::select! {
        measured = timeline::measure(&target, run) => measured,
        () = interrupted() => Err(anyhow::anyhow!("interrupted")),
    };
    // Before anything else can fail: the stack goes back to how it was.
    let not_restored = match &injector {
        Some(injector) => injector.restore().await,
        None => Vec::new(),
    };
    let measured = measured?;
    let mut report = FaultReport::new(
        format!(
            "{workload} against {}{}",
            target.base(),
            if stack.is_some() { " with faults" } else { "" }
        ),
        command_line,
        plan,
        load.data(),
        stack,
        args.scrape_every,
        measured,
    );
    report.report.user_count = data.ids.len();
    report.not_restored = not_restored;
    if let Some(out) = out {
        report.write(&out)?;
        eprintln!("report written to {}", out.display());
    }
    if report.applied.is_empty() {
        print!("{}", report.memory_table());
        print!("{}", report.report.table());
    } else {
        print!("{}", report.fault_table());
    }
    ensure!(
        report.not_restored.is_empty(),
        "faults not undone: {}",
        report.not_restored.join("; ")
    );
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
