//! One measured run ([`measure`]), and the comparison of a knob's settings ([`compare`]).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::{Context, ensure};
use indicatif::{ProgressBar, ProgressStyle};

use crate::{
    engine::{self, Plan, Progress},
    metrics::Counters,
    process::{self, Launch},
    report::{Report, RunReport},
    target::Target,
    workload::{DataOptions, DataSet, Generator, Workload},
};

/// Runs `workload` against `target` under `plan`. With `metrics_path`, the service's
/// counters are read at the start and the end of the measured window.
pub async fn measure(
    target: &Target,
    metrics_path: Option<&str>,
    workload: Workload,
    data: &DataSet,
    plan: &Plan,
    setting: &str,
    show_progress: bool,
) -> anyhow::Result<RunReport> {
    let generator = Arc::new(Generator::new(workload, data.clone())?);
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(show_progress, plan, &format!("{workload} {setting}"));
    let ticker = {
        let (bar, progress) = (bar.clone(), progress.clone());
        let started = tokio::time::Instant::now();
        tokio::spawn(async move {
            let mut last = (0u64, started);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = tokio::time::Instant::now();
                let answered = progress.answered.load(Ordering::Relaxed);
                let rate = (answered - last.0) as f64 / (now - last.1).as_secs_f64();
                last = (answered, now);
                bar.set_position((now - started).as_millis() as u64);
                bar.set_message(format!("{answered} answers, {rate:.0}/s"));
            }
        })
    };
    let scrape = || async {
        match metrics_path {
            Some(path) => Counters::scrape(target, path).await,
            None => None,
        }
    };
    let result = engine::run(target, generator, plan, progress, None, scrape).await;
    ticker.abort();
    bar.finish_and_clear();
    let (outcome, before) = result?;
    let after = scrape().await;
    let counters = before.zip(after).map(|(before, after)| after.since(before));
    let mut run = RunReport::new(workload.name(), setting, &outcome, counters);
    run.shed_expected = workload.sheds();
    Ok(run)
}

fn progress_bar(show: bool, plan: &Plan, label: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let total = (plan.warmup + plan.duration).as_millis() as u64;
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{prefix:>28} [{bar:30}] {elapsed:>4} {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(label.to_owned());
    bar
}

/// A comparison: every workload against the service once per value of `knob`.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    pub workloads: Vec<Workload>,
    /// A config key of the service, `section.field` (`cache.strategy`): set per run through
    /// its environment variable (`SCALABLE_API_CACHE__STRATEGY`). One knob is not a key:
    /// `ratelimit` compares the rate limits off and on (see [`knob_env`]).
    pub knob: String,
    pub values: Vec<String>,
    /// The service binary (`target/release/scalable-api`); started as `serve`.
    pub service_bin: PathBuf,
    /// Extra environment for every service run (after the defaults, before the knob).
    pub service_env: BTreeMap<String, String>,
    /// The Redis the service caches and counts its limits in: every run gets its own key
    /// prefix there, deleted after the run.
    pub redis_url: String,
    /// The binary that serves the hello-world baseline (`loadtest hello`); `None`: no baseline.
    pub hello_bin: Option<PathBuf>,
    pub plan: Plan,
    pub data: DataOptions,
    /// Report folder; service logs go to `logs/` in it.
    pub out: PathBuf,
    pub title: String,
    pub command: String,
    pub show_progress: bool,
}

/// The environment variable of a config key: `cache.strategy` -> `SCALABLE_API_CACHE__STRATEGY`.
pub fn env_var_of(knob: &str) -> String {
    format!(
        "SCALABLE_API_{}",
        knob.replace('.', "__").replace('-', "_").to_uppercase()
    )
}

/// The `ratelimit` knob's values: `off`, or an algorithm (`gcra`, `token-bucket`, ...).
pub const RATELIMIT_KNOB: &str = "ratelimit";

/// The `service-bin` knob's values are service binaries (`/tmp/before,/tmp/after`): the same
/// settings, one build against another, in one run (a code change measured against the build
/// without it). Each run is labelled with its binary's file name.
pub const BINARY_KNOB: &str = "service-bin";

/// What a setting is called in the report and its log file: the value, or a binary's file name.
pub fn setting_label(knob: &str, value: &str) -> String {
    if knob != BINARY_KNOB {
        return value.to_owned();
    }
    std::path::Path::new(value).file_name().map_or_else(
        || value.to_owned(),
        |name| name.to_string_lossy().into_owned(),
    )
}

/// Tiers and route classes of the service's `ratelimit.tiers` table.
const TIERS: [&str; 4] = ["ANONYMOUS", "FREE", "PRO", "SERVICE"];
const CLASSES: [&str; 4] = ["READS", "WRITES", "AUTH", "GRAPHQL"];
/// A budget no run reaches: a billion units a window, a burst and a day.
const NEVER_REACHED: &str = "1000000000";

/// The service environment that sets `knob` to `value`.
///
/// For [`RATELIMIT_KNOB`]: `off` switches the limits off; an algorithm switches them on with
/// that algorithm, and every budget (and the shield) raised past what any run sends, so the
/// run measures what the limits cost (a Redis script per request, the headers), never a 429:
/// a load generator is one address, and the default budgets would refuse it within a second.
pub fn knob_env(knob: &str, value: &str) -> Vec<(String, String)> {
    if knob == BINARY_KNOB {
        return Vec::new();
    }
    if knob != RATELIMIT_KNOB {
        return vec![(env_var_of(knob), value.to_owned())];
    }
    let on = value != "off";
    let mut env = vec![("SCALABLE_API_RATELIMIT__ENABLED".to_owned(), on.to_string())];
    if !on {
        return env;
    }
    env.push(("SCALABLE_API_RATELIMIT__ALGORITHM".into(), value.to_owned()));
    for field in ["PER_SECOND", "BURST"] {
        env.push((
            format!("SCALABLE_API_RATELIMIT__SHIELD__{field}"),
            NEVER_REACHED.into(),
        ));
    }
    for tier in TIERS {
        for class in CLASSES {
            for field in ["RATE", "BURST", "DAILY_QUOTA"] {
                env.push((
                    format!("SCALABLE_API_RATELIMIT__TIERS__{tier}__{class}__{field}"),
                    NEVER_REACHED.into(),
                ));
            }
        }
    }
    env
}

pub async fn compare(options: &CompareOptions) -> anyhow::Result<Report> {
    ensure!(!options.workloads.is_empty(), "no workloads to run");
    ensure!(!options.values.is_empty(), "no settings to compare");
    let mut report = Report::new(
        options.title.clone(),
        options.command.clone(),
        options.plan.clone(),
        options.data.clone(),
        options.knob.clone(),
    );

    if let Some(hello) = &options.hello_bin {
        let launch = Launch {
            program: hello.clone(),
            args: vec!["hello".into(), "--addr".into(), "{addr}".into()],
            env: BTreeMap::new(),
            ready_path: "/".into(),
            log: options.out.join("logs").join("baseline.log"),
        };
        let mut server = launch.start(Duration::from_secs(30)).await?;
        let result = measure(
            &server.target,
            None,
            Workload::Hello,
            &DataSet::default(),
            &options.plan,
            "baseline",
            options.show_progress,
        )
        .await;
        server.stop().await?;
        report.baseline = Some(result?);
    }

    // The service's settings in every run: its address and a cache namespace of its own;
    // warnings-only logs, so the runs measure the patterns rather than log writing (pass
    // --service-env SCALABLE_API_TELEMETRY__LOG_FILTER=info to measure with access logs);
    // rate limits off, so that one load generator (one address) is not refused, unless they
    // are the knob (or --service-env turns them on); load shedding off but for the `overload`
    // workload (see `run_setting`).
    let mut env = BTreeMap::from([
        (
            "SCALABLE_API_TELEMETRY__LOG_FILTER".to_owned(),
            "warn".to_owned(),
        ),
        (
            "SCALABLE_API_RATELIMIT__ENABLED".to_owned(),
            "false".to_owned(),
        ),
    ]);
    env.extend(options.service_env.clone());
    report.service_env = env.clone();
    env.insert("SCALABLE_API_HTTP__ADDR".into(), "{addr}".into());
    env.insert(
        "SCALABLE_API_CACHE__REDIS_URL".into(),
        options.redis_url.clone(),
    );

    let knob_var = env_var_of(&options.knob);
    let mut data: Option<DataSet> = None;
    let mut n = 0;
    for &workload in &options.workloads {
        for value in &options.values {
            n += 1;
            let mut env = env.clone();
            env.extend(knob_env(&options.knob, value));
            let outcome = run_setting(options, workload, value, env, n, &mut data).await;
            report.user_count = data.as_ref().map_or(0, |d| d.ids.len());
            let run = match outcome {
                Ok(run) => run,
                // Minutes of runs are not thrown away with the one that failed: what was
                // measured is written, marked incomplete, and the error says where.
                Err(err) if report.baseline.is_some() || !report.runs.is_empty() => {
                    report.title = format!(
                        "{} (incomplete: stopped at {workload} with {knob_var}={value})",
                        report.title
                    );
                    report.relate_to_baseline();
                    report.write(&options.out)?;
                    return Err(err.context(format!(
                        "the runs before it are in {}",
                        options.out.display()
                    )));
                }
                Err(err) => return Err(err),
            };
            if options.show_progress {
                eprintln!(
                    "{workload} {value}: {:.0} req/s, p99 {:.2} ms",
                    run.requests_per_sec, run.p99_ms
                );
            }
            report.runs.push(run);
        }
    }
    report.relate_to_baseline();
    report.write(&options.out)?;
    Ok(report)
}

/// One run: a fresh service with `env` (and cache and limiter key prefix number `n`), the workload's
/// data read from it the first time, the measurement, then the service stopped and its keys
/// deleted.
async fn run_setting(
    options: &CompareOptions,
    workload: Workload,
    value: &str,
    mut env: BTreeMap<String, String>,
    n: usize,
    data: &mut Option<DataSet>,
) -> anyhow::Result<RunReport> {
    let prefix = format!("loadtest-{}-{n}", std::process::id());
    env.insert("SCALABLE_API_CACHE__KEY_PREFIX".into(), prefix.clone());
    // The limiter's counts too (the writers' logins are limited per account and per address):
    // a fresh namespace, so that earlier runs' logins never spend this one's budget.
    env.insert(
        "SCALABLE_API_RATELIMIT__REDIS_URL".into(),
        options.redis_url.clone(),
    );
    env.insert(
        "SCALABLE_API_RATELIMIT__KEY_PREFIX".into(),
        format!("{prefix}:ratelimit"),
    );
    if !workload.sheds() {
        // Load shedding off too, unless set otherwise (the knob, --service-env): a closed loop
        // of 64 connections is an overload for the costlier workloads, and with shedding on
        // a comparison of caches would measure how fast anonymous requests are refused (they
        // are shed first, at once) rather than how fast they are served. The `overload`
        // workload is where shedding is measured.
        env.entry("SCALABLE_API_SHEDDING__ENABLED".into())
            .or_insert_with(|| "false".into());
    }
    if workload.sheds() {
        // `overload` logs the same demo users in again and again from one address, which the
        // login limits (tries per account and per address) would soon answer with 429s. Out of
        // its way unless set otherwise, so that what refuses a login is load shedding (or the
        // hashing bound), which is what the workload is about.
        for var in [
            "SCALABLE_API_AUTH__LOGIN_LIMITS__ACCOUNT_TRIES",
            "SCALABLE_API_AUTH__LOGIN_LIMITS__ADDRESS_TRIES",
        ] {
            env.entry(var.into()).or_insert_with(|| "1000000000".into());
        }
    }
    let program = if options.knob == BINARY_KNOB {
        PathBuf::from(value)
    } else {
        options.service_bin.clone()
    };
    let value = &setting_label(&options.knob, value);
    let launch = Launch {
        program,
        args: vec!["serve".into()],
        env,
        ready_path: "/readyz".into(),
        log: options
            .out
            .join("logs")
            .join(format!("{workload}-{value}.log")),
    };
    let setting = format!("{}={value}", options.knob);
    if data.is_none() {
        // The workloads' data (ids, logged-in writers) is read through the service, which
        // fills its cache on the way: read it from a service of its own, then drop that
        // service and its keys, so that the first measured run starts as cold as the others.
        let mut loader = launch
            .start(Duration::from_secs(60))
            .await
            .with_context(|| format!("starting the service with {setting}"))?;
        let loaded = DataSet::load(&loader.target, &options.workloads, &options.data).await;
        loader.stop().await?;
        process::delete_keys(&options.redis_url, &prefix).await?;
        *data = Some(loaded?);
    }
    let mut service = launch
        .start(Duration::from_secs(60))
        .await
        .with_context(|| format!("starting the service with {setting}"))?;
    let result = async {
        measure(
            &service.target,
            Some("/metrics"),
            workload,
            data.as_ref().context("data loaded above")?,
            &options.plan,
            value,
            options.show_progress,
        )
        .await
    }
    .await
    .map(|mut run| {
        run.peak_rss_mib = service
            .peak_rss_kib()
            .map(|kib| (kib as f64 / 1024.0 * 10.0).round() / 10.0);
        run
    });
    service.stop().await?;
    process::delete_keys(&options.redis_url, &prefix).await?;
    result.with_context(|| {
        format!(
            "{workload} with {setting} (service log: {})",
            service.log().display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_knob_becomes_the_services_environment_variable() {
        assert_eq!(env_var_of("cache.strategy"), "SCALABLE_API_CACHE__STRATEGY");
        assert!(knob_env(BINARY_KNOB, "/tmp/after").is_empty());
        assert_eq!(setting_label(BINARY_KNOB, "/tmp/builds/after"), "after");
        assert_eq!(setting_label("cache.strategy", "two-tier"), "two-tier");
        assert_eq!(
            env_var_of("graphql.dataloaders"),
            "SCALABLE_API_GRAPHQL__DATALOADERS"
        );
        assert_eq!(
            env_var_of("graphql.batch_window"),
            "SCALABLE_API_GRAPHQL__BATCH_WINDOW"
        );
        assert_eq!(
            env_var_of("db.replicas.max-lag"),
            "SCALABLE_API_DB__REPLICAS__MAX_LAG"
        );
    }

    #[test]
    fn the_ratelimit_knob_switches_the_limits_and_raises_every_budget_out_of_reach() {
        assert_eq!(
            knob_env("cache.strategy", "two-tier"),
            [(
                "SCALABLE_API_CACHE__STRATEGY".to_owned(),
                "two-tier".to_owned()
            )]
        );
        assert_eq!(
            knob_env("ratelimit", "off"),
            [(
                "SCALABLE_API_RATELIMIT__ENABLED".to_owned(),
                "false".to_owned()
            )]
        );
        let on: BTreeMap<String, String> =
            knob_env("ratelimit", "token-bucket").into_iter().collect();
        assert_eq!(on["SCALABLE_API_RATELIMIT__ENABLED"], "true");
        assert_eq!(on["SCALABLE_API_RATELIMIT__ALGORITHM"], "token-bucket");
        assert_eq!(
            on["SCALABLE_API_RATELIMIT__SHIELD__PER_SECOND"],
            NEVER_REACHED
        );
        let budgets = on.keys().filter(|k| k.contains("__TIERS__")).count();
        assert_eq!(budgets, 4 * 4 * 3, "every tier, class and field");
    }
}
