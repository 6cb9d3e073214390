//! Figures per run, and the report: a Markdown table, the raw figures as JSON, an SVG chart.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::Context;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{
    engine::{ClassOutcome, Outcome, Plan, StopReason},
    metrics::Counters,
    server_timing::TimingMean,
    workload::DataOptions,
};

/// The figures of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub workload: String,
    /// The knob's value (`two-tier`), or `baseline`.
    pub setting: String,
    pub requests_per_sec: f64,
    pub responses: u64,
    pub window_secs: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: BTreeMap<String, u64>,
    pub error_samples: Vec<String>,
    /// Non-2xx answers by status.
    pub non_2xx: BTreeMap<u16, u64>,
    /// Requests in flight at the deadline, abandoned.
    pub unfinished: u64,
    /// From the service's `/metrics`; `None` where it has none.
    pub sql_per_request: Option<f64>,
    pub sql_per_sec: Option<f64>,
    pub cache_hit_ratio: Option<f64>,
    /// Requests/s over the hello-world server's in the same report.
    pub vs_baseline: Option<f64>,
    pub stopped_by: StopReason,
    /// Figures per route class, for workloads that mix them (`overload`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub classes: BTreeMap<String, ClassReport>,
    /// 503 answers are the point of this run (the service sheds load): they are reported,
    /// not warned about.
    #[serde(default)]
    pub shed_expected: bool,
    /// The service's `Server-Timing` per metric (`db`, `cache`, `batch`, `ser`, `total`),
    /// mean per answer of the window; empty where the answers had none (the baseline).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub server_timing: BTreeMap<String, TimingMean>,
    /// The service process's peak resident memory over its run (start, data load, warm-up
    /// and window), in MiB; `None` for a service this tool did not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
    /// Mean bytes of an answer's body as received (compressed, when the run asked for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_answer: Option<f64>,
    /// The service's staleness auditor over the window, when it ran one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staleness: Option<Staleness>,
}

/// A report folder's text parts: `dir/report.md` and `dir/report.json` (the chart is the
/// caller's), `dir` created if need be.
pub fn write_folder(dir: &Path, markdown: &str, json: &impl Serialize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::write(dir.join("report.md"), markdown)?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(json)? + "\n",
    )?;
    Ok(())
}

/// What the service's staleness auditor found in a run's window: served reads (from the L1,
/// Redis or a replica) read again on the primary, and how many were stale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Staleness {
    pub audited: u64,
    pub stale: u64,
    /// `stale / audited`; `None` with nothing audited.
    pub stale_ratio: Option<f64>,
    /// The 99th percentile of the stale reads' age (how long the primary had held the newer
    /// value), in ms; `None` without a stale read of known age.
    pub p99_age_ms: Option<f64>,
    /// Sampled reads not audited (every audit slot busy, or the primary read failed).
    pub skipped: u64,
    /// Of `audited`, reads whose client sent its consistency token (`--carry-token`).
    #[serde(default)]
    pub audited_with_token: u64,
    /// Of `stale`, those: read-your-writes promises 0.
    #[serde(default)]
    pub stale_with_token: u64,
}

impl Staleness {
    /// `None` when the service audited nothing (the auditor off).
    fn of(counters: &Counters) -> Option<Self> {
        if counters.audited + counters.audit_skipped <= 0.0 {
            return None;
        }
        Some(Self {
            audited: counters.audited.round() as u64,
            stale: counters.stale.round() as u64,
            stale_ratio: (counters.audited > 0.0).then(|| counters.stale / counters.audited),
            p99_age_ms: counters.age_quantile(0.99).map(|s| s * 1000.0),
            skipped: counters.audit_skipped.round() as u64,
            audited_with_token: counters.audited_with_token.round() as u64,
            stale_with_token: counters.stale_with_token.round() as u64,
        })
    }
}

/// One route class of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassReport {
    /// Sent in the window and answered or failed.
    pub requests: u64,
    /// The share answered with a 2xx.
    pub success_ratio: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// 503 answers: shed.
    pub shed: u64,
    /// Other non-2xx answers, by status.
    pub non_2xx: BTreeMap<u16, u64>,
    /// Requests without an answer (timeouts, I/O).
    pub errors: u64,
}

impl ClassReport {
    fn new(figures: &ClassOutcome) -> Self {
        let mut non_2xx = figures.non_2xx.clone();
        Self {
            requests: figures.requests(),
            success_ratio: figures.success_ratio(),
            p50_ms: figures.latency_ms(0.50),
            p99_ms: figures.latency_ms(0.99),
            shed: non_2xx.remove(&503).unwrap_or(0),
            non_2xx,
            errors: figures.errors,
        }
    }
}

impl RunReport {
    pub fn new(
        workload: &str,
        setting: &str,
        outcome: &Outcome,
        counters: Option<Counters>,
    ) -> Self {
        let responses = outcome.responses as f64;
        let secs = outcome.elapsed.as_secs_f64();
        Self {
            workload: workload.to_owned(),
            setting: setting.to_owned(),
            requests_per_sec: outcome.requests_per_sec(),
            responses: outcome.responses,
            window_secs: secs,
            p50_ms: outcome.latency_ms(0.50),
            p95_ms: outcome.latency_ms(0.95),
            p99_ms: outcome.latency_ms(0.99),
            max_ms: outcome.max_ms(),
            errors: outcome.errors.clone(),
            error_samples: outcome.error_samples.clone(),
            non_2xx: outcome.non_2xx.clone(),
            unfinished: outcome.unfinished,
            sql_per_request: counters
                .filter(|_| responses > 0.0)
                .map(|c| c.sql / responses),
            sql_per_sec: counters.filter(|_| secs > 0.0).map(|c| c.sql / secs),
            cache_hit_ratio: counters.and_then(Counters::hit_ratio),
            vs_baseline: None,
            stopped_by: outcome.stopped_by,
            classes: outcome
                .classes
                .iter()
                .map(|(class, figures)| (class.clone(), ClassReport::new(figures)))
                .collect(),
            shed_expected: false,
            server_timing: outcome.server_timing.means(outcome.responses),
            peak_rss_mib: None,
            bytes_per_answer: (responses > 0.0).then(|| outcome.body_bytes as f64 / responses),
            staleness: counters.as_ref().and_then(Staleness::of),
        }
    }

    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn non_2xx_count(&self) -> u64 {
        self.non_2xx.values().sum()
    }

    /// Non-2xx answers that are not what the run is about (a 503 where shedding is expected).
    pub fn unexpected_non_2xx(&self) -> BTreeMap<u16, u64> {
        let mut non_2xx = self.non_2xx.clone();
        if self.shed_expected {
            non_2xx.remove(&503);
        }
        non_2xx
    }
}

/// The machine the figures come from: load generator and service share it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_gib: f64,
    pub os: String,
}

impl Machine {
    pub fn this() -> Self {
        let read = |path| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|l| l.trim_matches('"').to_owned())
            .unwrap_or_else(|| std::env::consts::OS.to_owned());
        Self {
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            cpu,
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            os,
        }
    }
}

/// A whole report: how it was run, the baseline, and every run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub title: String,
    /// The command line that produced it.
    pub command: String,
    pub generated_at: String,
    pub machine: Machine,
    pub plan: Plan,
    pub data: DataOptions,
    /// The knob compared (`cache.strategy`), if any.
    pub knob: Option<String>,
    /// Settings given to every service run (environment), for the record.
    pub service_env: BTreeMap<String, String>,
    pub user_count: usize,
    pub baseline: Option<RunReport>,
    pub runs: Vec<RunReport>,
}

impl Report {
    /// An empty report stamped with this machine and the current time.
    pub fn new(
        title: String,
        command: String,
        plan: Plan,
        data: DataOptions,
        knob: String,
    ) -> Self {
        Self {
            title,
            command,
            generated_at: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            machine: Machine::this(),
            plan,
            data,
            knob: Some(knob),
            service_env: BTreeMap::new(),
            user_count: 0,
            baseline: None,
            runs: Vec::new(),
        }
    }

    /// Fills `vs_baseline` of every run.
    pub fn relate_to_baseline(&mut self) {
        let Some(ceiling) = self
            .baseline
            .as_ref()
            .map(|b| b.requests_per_sec)
            .filter(|r| *r > 0.0)
        else {
            return;
        };
        for run in &mut self.runs {
            run.vs_baseline = Some(run.requests_per_sec / ceiling);
        }
        if let Some(baseline) = &mut self.baseline {
            baseline.vs_baseline = Some(1.0);
        }
    }

    /// The table: one row per run, the baseline first.
    pub fn table(&self) -> String {
        let knob = self.knob.as_deref().unwrap_or("setting");
        let mut out = format!(
            "| workload | {knob} | req/s | × baseline | p50 ms | p95 ms | p99 ms | max ms | errors | non-2xx | SQL/req | SQL/s | cache hits | peak RSS MiB | bytes/answer |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
        );
        for run in self.baseline.iter().chain(&self.runs) {
            let opt = |v: Option<f64>, digits: usize| {
                v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
                run.workload,
                run.setting,
                thousands(run.requests_per_sec),
                opt(run.vs_baseline, 2),
                run.p50_ms,
                run.p95_ms,
                run.p99_ms,
                run.max_ms,
                run.error_count(),
                run.non_2xx_count(),
                opt(run.sql_per_request, 2),
                run.sql_per_sec.map_or_else(|| "–".to_owned(), thousands),
                run.cache_hit_ratio
                    .map_or_else(|| "–".to_owned(), |r| format!("{:.1} %", r * 100.0)),
                opt(run.peak_rss_mib, 1),
                run.bytes_per_answer
                    .map_or_else(|| "–".to_owned(), thousands),
            );
        }
        if self.runs.iter().any(|run| !run.classes.is_empty()) {
            out.push_str(&self.class_table());
        }
        if self.runs.iter().any(|run| !run.server_timing.is_empty()) {
            out.push_str(&self.timing_table());
        }
        if self.runs.iter().any(|run| run.staleness.is_some()) {
            out.push_str(&self.staleness_table());
        }
        out
    }

    /// What the service's staleness auditor found, next to each run's throughput.
    fn staleness_table(&self) -> String {
        let knob = self.knob.as_deref().unwrap_or("setting");
        let mut out = format!(
            "\n**Staleness: sampled reads served from the L1, Redis or a replica, read again on \
             the primary** (stale: the primary already held a newer value when it was served; \
             age: for how long; `–`: none)\n\n\
             | workload | {knob} | req/s | audited | stale | stale % | p99 age ms | skipped | \
             with token: audited | with token: stale |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|--:|\n"
        );
        for run in &self.runs {
            let Some(s) = &run.staleness else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                run.workload,
                run.setting,
                thousands(run.requests_per_sec),
                thousands(s.audited as f64),
                thousands(s.stale as f64),
                s.stale_ratio
                    .map_or_else(|| "–".to_owned(), |r| format!("{:.2} %", r * 100.0)),
                s.p99_age_ms
                    .map_or_else(|| "–".to_owned(), |ms| format!("{ms:.1}")),
                thousands(s.skipped as f64),
                thousands(s.audited_with_token as f64),
                thousands(s.stale_with_token as f64),
            );
        }
        out
    }

    /// Where the time went, as the service measured it (`Server-Timing`): one column per
    /// metric, the service's own first (`db`, `cache`, `batch`, `ser`, `total`), then any other
    /// in name order.
    fn timing_table(&self) -> String {
        const KNOWN: [&str; 5] = ["db", "cache", "batch", "ser", "total"];
        let mut metrics: Vec<&str> = KNOWN.to_vec();
        for run in &self.runs {
            for name in run.server_timing.keys() {
                if !metrics.contains(&name.as_str()) {
                    metrics.push(name);
                }
            }
        }
        metrics[KNOWN.len()..].sort_unstable();
        let knob = self.knob.as_deref().unwrap_or("setting");
        let mut out = format!(
            "\n**Where the time went: Server-Timing, mean ms per request** (in parentheses: the \
             mean count the entry's `desc` gives, queries, round trips or batches; `–`: never \
             in the run)\n\n| workload | {knob} | {} |\n|---|---|{}\n",
            metrics.join(" | "),
            "--:|".repeat(metrics.len()),
        );
        for run in &self.runs {
            let cells: Vec<String> = metrics
                .iter()
                .map(|name| match run.server_timing.get(*name) {
                    Some(TimingMean {
                        ms,
                        count: Some(count),
                    }) => format!("{ms:.2} ({count:.2})"),
                    Some(TimingMean { ms, count: None }) => format!("{ms:.2}"),
                    None => "–".to_owned(),
                })
                .collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                run.workload,
                run.setting,
                cells.join(" | ")
            );
        }
        out
    }

    /// Per route class of the runs that have them: how much of each class got through, and
    /// how fast. Load shedding shows here: the classes it refuses first lose success, the ones
    /// it protects keep theirs and a short p99.
    fn class_table(&self) -> String {
        let knob = self.knob.as_deref().unwrap_or("setting");
        let mut out = format!(
            "\n| workload | {knob} | class | requests | success | shed (503) | other non-2xx | errors | p50 ms | p99 ms |\n\
             |---|---|---|--:|--:|--:|--:|--:|--:|--:|\n"
        );
        for run in &self.runs {
            for (class, figures) in &run.classes {
                let _ = writeln!(
                    out,
                    "| {} | {} | {class} | {} | {:.1} % | {} | {} | {} | {:.2} | {:.2} |",
                    run.workload,
                    run.setting,
                    thousands(figures.requests as f64),
                    figures.success_ratio * 100.0,
                    thousands(figures.shed as f64),
                    figures.non_2xx.values().sum::<u64>(),
                    figures.errors,
                    figures.p50_ms,
                    figures.p99_ms,
                );
            }
        }
        out
    }

    /// Lines naming every run that had errors or non-2xx answers, with samples: a run
    /// that failed must not pass for a fast one.
    pub fn warnings(&self) -> String {
        let mut out = String::new();
        for run in self.baseline.iter().chain(&self.runs) {
            // Requests in flight at the deadline (at most one per connection) are not errors.
            let unexpected = run.unexpected_non_2xx();
            if run.error_count() + unexpected.values().sum::<u64>() == 0 {
                continue;
            }
            let _ = writeln!(
                out,
                "- **{} / {}**: errors {:?}, non-2xx {:?}, unfinished at the deadline {}; {}",
                run.workload,
                run.setting,
                run.errors,
                unexpected,
                run.unfinished,
                if run.error_samples.is_empty() {
                    "no error messages".to_owned()
                } else {
                    format!("first errors: {}", run.error_samples.join(" | "))
                }
            );
        }
        out
    }

    pub fn markdown(&self) -> String {
        let plan = &self.plan;
        let mut out = format!("# {}\n\n", self.title);
        let _ = writeln!(
            out,
            "Generated {} by `{}`.\n",
            self.generated_at, self.command
        );
        let _ = writeln!(
            out,
            "**Machine:** {} cores ({}), {} GiB, {}. The load generator runs on the same \
             machine as the service, its databases and Redis, as in any single-box test: \
             read ratios between rows, not absolute figures.\n",
            self.machine.cores, self.machine.cpu, self.machine.memory_gib, self.machine.os
        );
        let _ = writeln!(
            out,
            "**Load:** {} connections, {}, \
             {:.0} s warm-up then {:.0} s measured{}, request timeout {:.1} s, seed {}. \
             Hot set {} of {} users; write_mix logs in {} demo users. Every service run starts \
             with a fresh process and an empty cache (its own Redis key prefix).\n",
            plan.connections,
            match plan.rate {
                Some(rate) => format!(
                    "open loop at {} req/s (latency from when each request was due)",
                    thousands(rate)
                ),
                None => "closed loop (one request in flight per connection)".to_owned(),
            },
            plan.warmup.as_secs_f64(),
            plan.duration.as_secs_f64(),
            plan.requests
                .map(|n| format!(" (or {n} requests)"))
                .unwrap_or_default(),
            plan.timeout.as_secs_f64(),
            plan.seed,
            thousands(self.data.hot as f64),
            thousands(self.user_count as f64),
            self.data.writers,
        );
        if !self.service_env.is_empty() {
            let env: Vec<String> = self
                .service_env
                .iter()
                .map(|(k, v)| format!("`{k}={v}`"))
                .collect();
            let _ = writeln!(out, "**Service settings:** {}.\n", env.join(", "));
        }
        out.push_str(&self.table());
        out.push_str(
            "\n`× baseline`: requests/s over those of a hello-world axum server (`loadtest hello`) \
             measured in the same report with the same load: the ceiling of this machine with \
             this load generator. `SQL/req`, `SQL/s` and `cache hits` come from the service's own \
             `db_queries_total` and `cache_requests_total` over the measured window. The \
             Server-Timing table sums the `Server-Timing` header of every measured answer and \
             divides by the answers: `db` is SQL time (pool checkout included), `cache` Redis \
             round trips, `batch` DataLoader batch windows, `ser` JSON serialisation, `total` \
             the request inside the service; the parts overlap (concurrent shards) and do not \
             add up to the total, and the latency above minus `total` is the network, the \
             service's outer layers and the load generator.\n",
        );
        let warnings = self.warnings();
        if !warnings.is_empty() {
            out.push_str("\n**Runs with errors:**\n\n");
            out.push_str(&warnings);
        }
        if !self.runs.is_empty() {
            out.push_str("\n![throughput and p99 per setting](chart.svg)\n");
        }
        out
    }

    /// Writes `report.md`, `report.json` and `chart.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        write_folder(dir, &self.markdown(), self)?;
        self.chart(&dir.join("chart.svg"))
    }

    /// Two rows of panels, one column per workload: requests/s on top, p99 below, one bar
    /// per setting. Each panel has its own scale: a GraphQL page and a cached GET differ by
    /// two orders of magnitude, and what matters is the ratio between settings.
    pub fn chart(&self, path: &Path) -> anyhow::Result<()> {
        let mut workloads: Vec<&str> = Vec::new();
        let mut settings: Vec<&str> = Vec::new();
        for run in &self.runs {
            if !workloads.contains(&run.workload.as_str()) {
                workloads.push(&run.workload);
            }
            if !settings.contains(&run.setting.as_str()) {
                settings.push(&run.setting);
            }
        }
        if workloads.is_empty() {
            // A report that stopped before its first run: the baseline alone has no chart.
            return Ok(());
        }
        let width = 300 * workloads.len() as u32;
        let root = SVGBackend::new(path, (width.max(600), 640)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        let caption = match &self.baseline {
            Some(b) => format!(
                "{} — hello-world baseline {} req/s",
                self.title,
                thousands(b.requests_per_sec)
            ),
            None => self.title.clone(),
        };
        let root = root
            .titled(&caption, ("sans-serif", 18))
            .map_err(plot_error)?;
        let panels = root.split_evenly((2, workloads.len()));
        let metrics: [(&str, Figure); 2] =
            [("req/s", |r| r.requests_per_sec), ("p99 ms", |r| r.p99_ms)];
        for (row, (label, value)) in metrics.iter().enumerate() {
            for (col, workload) in workloads.iter().enumerate() {
                let bars: Vec<(usize, f64)> = settings
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        self.runs
                            .iter()
                            .find(|r| r.workload == *workload && r.setting == *s)
                            .map(|r| (i, value(r)))
                    })
                    .collect();
                let top = bars.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1e-9) * 1.15;
                let area = &panels[row * workloads.len() + col];
                let mut chart = ChartBuilder::on(area)
                    .caption(format!("{workload}: {label}"), ("sans-serif", 14))
                    .margin(8)
                    .x_label_area_size(28)
                    .y_label_area_size(52)
                    // `a..b` segments include `b`: one segment per setting is `0..n - 1`.
                    .build_cartesian_2d(
                        (0..settings.len().saturating_sub(1)).into_segmented(),
                        0.0..top,
                    )
                    .map_err(plot_error)?;
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .max_light_lines(1)
                    .x_labels(settings.len())
                    .x_label_formatter(&|v| match v {
                        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => settings
                            .get(*i)
                            .map_or_else(String::new, |s| (*s).to_owned()),
                        SegmentValue::Last => String::new(),
                    })
                    .y_label_formatter(&|v| compact(*v))
                    .label_style(("sans-serif", 11))
                    .draw()
                    .map_err(plot_error)?;
                chart
                    .draw_series(bars.iter().map(|&(i, v)| {
                        let color = Palette99::pick(i).filled();
                        let mut bar = Rectangle::new(
                            [
                                (SegmentValue::Exact(i), 0.0),
                                (SegmentValue::Exact(i + 1), v),
                            ],
                            color,
                        );
                        bar.set_margin(0, 0, 12, 12);
                        bar
                    }))
                    .map_err(plot_error)?;
            }
        }
        root.present().map_err(plot_error)?;
        Ok(())
    }
}

/// One figure of a run, as drawn in a chart row.
type Figure = fn(&RunReport) -> f64;

pub(crate) fn plot_error<E: std::fmt::Debug>(err: E) -> anyhow::Error {
    anyhow::anyhow!("chart: {err:?}")
}

/// `12345.6` -> `12,346`.
pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Axis labels: `1.2k`, `35`, `0.5`.
fn compact(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hdrhistogram::Histogram;

    use super::*;

    fn run(workload: &str, setting: &str, rps: f64, errors: u64) -> RunReport {
        let mut latency_us = Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram");
        latency_us.record(2_000).expect("record");
        let responses = (rps * 10.0) as u64;
        // Half the answers read the database, and every one says its total.
        let mut server_timing = crate::server_timing::TimingSums::default();
        if workload != "hello" {
            for i in 0..responses {
                server_timing.add_header(if i % 2 == 0 {
                    b"db;dur=3;desc=\"2 queries\", ser;dur=0.5, total;dur=4"
                } else {
                    b"ser;dur=0.5, total;dur=2"
                });
            }
        }
        let outcome = Outcome {
            elapsed: Duration::from_secs(10),
            responses,
            non_2xx: BTreeMap::from([(503, errors)]),
            errors: BTreeMap::from([("timeout".to_owned(), errors)]),
            error_samples: vec!["no answer within 5s".to_owned()],
            unfinished: 0,
            latency_us,
            stopped_by: StopReason::Duration,
            classes: BTreeMap::new(),
            server_timing,
            body_bytes: responses * 120,
        };
        // Two-tier's auditor found 3 stale reads in 200, 1-2.5 ms behind.
        let mut age_buckets = [0.0; crate::metrics::AGE_BOUNDS.len()];
        if setting == "two-tier" {
            for (i, bucket) in age_buckets.iter_mut().enumerate() {
                *bucket = if i == 0 { 0.0 } else { 3.0 };
            }
        }
        let counters = Counters {
            sql: rps * 10.0 * 0.5,
            cache_hits: 90.0,
            cache_misses: 10.0,
            audited: if setting == "two-tier" { 200.0 } else { 0.0 },
            stale: if setting == "two-tier" { 3.0 } else { 0.0 },
            audit_skipped: 0.0,
            audited_with_token: if setting == "two-tier" { 50.0 } else { 0.0 },
            stale_with_token: 0.0,
            age_buckets,
        };
        RunReport::new(workload, setting, &outcome, Some(counters))
    }

    fn report() -> Report {
        let mut report = Report {
            title: "test".to_owned(),
            command: "loadtest compare".to_owned(),
            generated_at: "now".to_owned(),
            machine: Machine::this(),
            plan: Plan::default(),
            data: DataOptions::default(),
            knob: Some("cache.strategy".to_owned()),
            service_env: BTreeMap::new(),
            user_count: 10,
            baseline: Some(run("hello", "baseline", 20_000.0, 0)),
            runs: vec![
                run("user_hot", "none", 5_000.0, 0),
                run("user_hot", "two-tier", 15_000.0, 3),
            ],
        };
        report.relate_to_baseline();
        report
    }

    #[test]
    fn the_table_relates_runs_to_the_baseline_and_names_errors() {
        let report = report();
        let table = report.table();
        assert!(
            table.contains("| user_hot | none | 5,000 | 0.25 |"),
            "{table}"
        );
        assert!(
            table.contains("| user_hot | two-tier | 15,000 | 0.75 |"),
            "{table}"
        );
        assert!(table.contains("| 0.50 | 2,500 | 90.0 % |"), "{table}");
        let warnings = report.warnings();
        assert!(warnings.contains("two-tier"), "{warnings}");
        assert!(warnings.contains("no answer within 5s"), "{warnings}");
        assert!(!warnings.contains("none"), "{warnings}");
    }

    #[test]
    fn the_timing_table_has_each_metrics_mean_per_request_for_every_run() {
        let table = report().table();
        assert!(
            table.contains("Where the time went: Server-Timing, mean ms per request"),
            "{table}"
        );
        assert!(
            table.contains("| workload | cache.strategy | db | cache | batch | ser | total |"),
            "{table}"
        );
        assert!(
            table.contains("| user_hot | none | 1.50 (1.00) | – | – | 0.50 | 3.00 |"),
            "{table}"
        );
        assert!(
            table.contains("| user_hot | two-tier | 1.50 (1.00) |"),
            "{table}"
        );
        assert!(!table.contains("| hello | baseline | 1.50"), "{table}");
        let json = serde_json::to_string(&report()).expect("json");
        let back: Report = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back.runs[0].server_timing["db"].count, Some(1.0));
        assert!(back.baseline.expect("baseline").server_timing.is_empty());
    }

    #[test]
    fn the_staleness_table_shows_what_the_auditor_found_next_to_the_throughput() {
        let report = report();
        let table = report.table();
        assert!(table.contains("| workload | cache.strategy | req/s | audited | stale | stale % | p99 age ms | skipped | with token: audited | with token: stale |"), "{table}");
        assert!(
            table
                .contains("| user_hot | two-tier | 15,000 | 200 | 3 | 1.50 % | 2.5 | 0 | 50 | 0 |"),
            "{table}"
        );
        assert!(
            !table.contains("| user_hot | none | 5,000 | 0 |"),
            "a run without the auditor has no row: {table}"
        );
        let json = serde_json::to_string(&report).expect("json");
        let back: Report = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back.runs[1].staleness.map(|s| s.stale), Some(3));
        assert_eq!(back.runs[0].staleness, None);
    }

    #[test]
    fn the_report_folder_has_the_table_the_json_and_a_chart() {
        let dir = std::env::temp_dir().join(format!("loadtest-report-{}", std::process::id()));
        let report = report();
        report.write(&dir).expect("written");
        let md = std::fs::read_to_string(dir.join("report.md")).expect("md");
        assert!(md.contains(&report.table()));
        let json: Report =
            serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("json"))
                .expect("the JSON reads back");
        assert_eq!(json.runs.len(), 2);
        assert_eq!(json.runs[1].errors["timeout"], 3);
        let svg = std::fs::read_to_string(dir.join("chart.svg")).expect("svg");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("user_hot: req/s") && svg.contains("two-tier"));
        assert!(svg.matches("<rect").count() >= 4, "bars are drawn");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234.6), "1,235");
        assert_eq!(thousands(26_220.0), "26,220");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
    }
}
