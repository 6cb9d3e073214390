//! A run over time: the load, the fault timeline (if any) and the health scrapes side by side,
//! then the report (`report.md`, `report.json`, `chart.svg`) with one row per fault and the
//! service's memory and in-process maps from the warm-up's end to the run's (what a soak
//! watches).
//!
//! The caller owns the [`Injector`] and calls [`Injector::restore`] however this ends: the
//! timeline's own task is aborted when the run is dropped (Ctrl-C), and a command it had
//! started finishes on its own; the stack's lock orders the restore after it.

use std::{
    fmt::Write as _,
    path::Path,
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{task::JoinHandle, time::Instant};

use crate::{
    engine::{self, Plan, Progress},
    faults::{Injector, Stack, Timeline},
    metrics::{Counters, Health},
    report::{Report, RunReport, thousands},
    series::{self, Applied, FaultRow, Memory, Second, Series, Span},
    target::Target,
    timechart,
    workload::{DataOptions, DataSet, Generator, Workload},
};

/// What [`measure`] needs besides the target.
pub struct FaultRun<'a> {
    pub metrics_path: &'a str,
    pub workload: Workload,
    pub data: &'a DataSet,
    pub plan: &'a Plan,
    pub timeline: &'a Timeline,
    /// `None` for a run without faults (a soak).
    pub injector: Option<Arc<Injector>>,
    /// How often the service's `/metrics` is read for [`Health`].
    pub scrape_every: Duration,
}

/// What one run with faults measured.
pub struct Measured {
    pub run: RunReport,
    pub seconds: Vec<Second>,
    pub health: Vec<Health>,
    pub applied: Vec<Applied>,
    pub faults: Vec<FaultRow>,
}

/// A task aborted when dropped: the scrapes and the fault timeline stop with the run.
struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    /// Waits for the task to end; still aborted if this wait is itself dropped (Ctrl-C).
    async fn join(mut self) {
        let _ = (&mut self.0).await;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub async fn measure(target: &Target, run: FaultRun<'_>) -> anyhow::Result<Measured> {
    let generator = Arc::new(Generator::new(run.workload, run.data.clone())?);
    let progress = Arc::new(Progress::default());
    let series = Arc::new(Series::new(run.plan.duration)?);
    let health: Arc<Mutex<Vec<Health>>> = Arc::default();
    let applied: Arc<Mutex<Vec<Applied>>> = Arc::default();
    let window = run.plan.duration;
    let on_window_start = || {
        let start = Instant::now();
        let scrapes = {
            let (target, path, health) =
                (target.clone(), run.metrics_path.to_owned(), health.clone());
            let every = run.scrape_every.max(Duration::from_millis(50));
            AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    let at = start.elapsed();
                    if at > window {
                        break;
                    }
                    if let Some(sample) =
                        Health::scrape(&target, &path, at.as_secs_f64(), every).await
                    {
                        health
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(sample);
                    }
                }
            }))
        };
        let faults = {
            let (events, injector, applied) = (
                run.timeline.events.clone(),
                run.injector.clone(),
                applied.clone(),
            );
            AbortOnDrop(tokio::spawn(async move {
                let Some(injector) = injector else {
                    return;
                };
                for event in events {
                    tokio::time::sleep_until(start + event.at).await;
                    let issued = start.elapsed().as_secs_f64();
                    eprintln!("faults: {:.1} s: {} {}", issued, event.verb, event.node);
                    let result = injector.apply(event.verb, &event.node).await;
                    if let Err(err) = &result {
                        eprintln!("faults: {err:#}");
                    }
                    applied
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Applied {
                            verb: event.verb,
                            node: event.node,
                            issued,
                            done: start.elapsed().as_secs_f64(),
                            error: result.err().map(|e| format!("{e:#}")),
                        });
                }
            }))
        };
        async move {
            let counters = Counters::scrape(target, run.metrics_path).await;
            (scrapes, faults, counters)
        }
    };
    let ticker = {
        let progress = progress.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                eprintln!(
                    "loadtest: {} answers",
                    progress.answered.load(Ordering::Relaxed)
                );
            }
        })
    };
    let result = engine::run(
        target,
        generator,
        run.plan,
        progress,
        Some(series.clone()),
        on_window_start,
    )
    .await;
    ticker.abort();
    let (outcome, (scrapes, faults, before)) = result?;
    // The last command may still run (a `start` waits for its node): its times belong in the
    // report, and the restore must not race it.
    faults.join().await;
    drop(scrapes);
    let after = Counters::scrape(target, run.metrics_path).await;
    let counters = before.zip(after).map(|(before, after)| after.since(before));
    let setting = if run.timeline.events.is_empty() {
        "no faults"
    } else {
        "faults"
    };
    let run_report = RunReport::new(run.workload.name(), setting, &outcome, counters);
    let series = Arc::try_unwrap(series)
        .map_err(|_| anyhow::anyhow!("the load's clients outlived the run"))?;
    let buckets = series.into_buckets();
    let health = std::mem::take(&mut *health.lock().unwrap_or_else(PoisonError::into_inner));
    let applied = std::mem::take(&mut *applied.lock().unwrap_or_else(PoisonError::into_inner));
    let faults = series::fault_rows(&spans(&applied), &buckets, &health);
    Ok(Measured {
        run: run_report,
        seconds: series::seconds(&buckets),
        health,
        applied,
        faults,
    })
}

/// Each fault paired with the command that undid it: the next undo of the same node.
pub fn spans(applied: &[Applied]) -> Vec<Span<'_>> {
    applied
        .iter()
        .enumerate()
        .filter_map(|(i, fault)| {
            let undo = fault.verb.undo()?;
            let undone = applied[i + 1..]
                .iter()
                .find(|a| a.node == fault.node && a.verb == undo);
            Some(Span {
                fault,
                undo: undone,
            })
        })
        .collect()
}

/// A run with faults, as written to its report folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultReport {
    /// How it was run, and the run's totals (one run).
    pub report: Report,
    pub workload: String,
    /// The stack the faults were applied to; `None` without faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<Stack>,
    pub scrape_every_ms: u64,
    pub faults: Vec<FaultRow>,
    pub applied: Vec<Applied>,
    pub seconds: Vec<Second>,
    pub health: Vec<Health>,
    /// Resident memory and in-process maps, from the warm-up's end to the run's.
    #[serde(default)]
    pub memory: Memory,
    /// Faults that could not be undone at the end (named here so nobody misses them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_restored: Vec<String>,
}

impl FaultReport {
    pub fn new(
        title: String,
        command: String,
        plan: Plan,
        data: DataOptions,
        stack: Option<Stack>,
        scrape_every: Duration,
        measured: Measured,
    ) -> Self {
        let workload = measured.run.workload.clone();
        let mut report = Report::new(title, command, plan, data, "faults".to_owned());
        report.runs.push(measured.run);
        Self {
            report,
            workload,
            stack,
            scrape_every_ms: scrape_every.as_millis() as u64,
            faults: measured.faults,
            applied: measured.applied,
            seconds: measured.seconds,
            memory: series::memory(&measured.health),
            health: measured.health,
            not_restored: Vec::new(),
        }
    }

    /// The per-fault table.
    pub fn fault_table(&self) -> String {
        let mut out = String::from(
            "| fault | at s | undone at s | window s | requests | failed | of which 503 | p99 ms | left rotation after s | recovered after s | read fallbacks | cache bypasses | rate-limit fallbacks |\n\
             |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        let secs =
            |v: Option<f64>, none: &str| v.map_or_else(|| none.to_owned(), |v| format!("{v:.1}"));
        for row in &self.faults {
            let _ = writeln!(
                out,
                "| {} | {:.1} | {} | {}–{} | {} | {} | {} | {:.1} | {} | {} | {} | {} | {} |",
                row.fault,
                row.at,
                secs(row.undone_at, "after the run"),
                row.window.0,
                row.window.1,
                thousands(row.requests as f64),
                thousands(row.failed as f64),
                thousands(row.unavailable as f64),
                row.p99_ms,
                secs(row.left_after, "never"),
                secs(
                    row.recovered_after,
                    if row.undone_at.is_some() {
                        "not in the run"
                    } else {
                        "–"
                    }
                ),
                thousands(row.read_fallbacks),
                thousands(row.cache_bypasses),
                thousands(row.ratelimit_fallbacks),
            );
        }
        out
    }

    /// Resident memory and the in-process maps: after the warm-up, at the end, the highest
    /// reading, and the change; empty when the service exports none of them.
    pub fn memory_table(&self) -> String {
        let memory = &self.memory;
        if memory.rss_mib.is_none() && memory.maps.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "\n## Memory and in-process maps\n\n\
             | figure | after the warm-up | at the end | highest | change |\n\
             |---|--:|--:|--:|--:|\n",
        );
        let change = |d: &series::Drift| {
            d.change_pct()
                .map_or_else(|| "–".to_owned(), |pct| format!("{pct:+.1} %"))
        };
        if let Some(rss) = &memory.rss_mib {
            let _ = writeln!(
                out,
                "| resident memory (MiB) | {:.1} | {:.1} | {:.1} | {} |",
                rss.start,
                rss.end,
                rss.max,
                change(rss)
            );
        }
        for (map, d) in &memory.maps {
            let _ = writeln!(
                out,
                "| `{map}` entries | {} | {} | {} | {} |",
                thousands(d.start),
                thousands(d.end),
                thousands(d.max),
                change(d)
            );
        }
        let failed: u64 = self.seconds.iter().map(|s| s.failed).sum();
        let requests: u64 = self.seconds.iter().map(|s| s.responses + s.errors).sum();
        let _ = writeln!(
            out,
            "\nFailed requests: {} of {} ({}). From `process_resident_memory_bytes` and \
             `in_process_entries`, read every {} ms; a map that only grows over a long run is \
             a leak, one that comes back down is load.",
            thousands(failed as f64),
            thousands(requests as f64),
            if requests > 0 {
                format!("{:.3} %", failed as f64 / requests as f64 * 100.0)
            } else {
                "–".to_owned()
            },
            self.scrape_every_ms,
        );
        out
    }

    pub fn markdown(&self) -> String {
        let report = &self.report;
        let plan = &report.plan;
        let mut out = format!("# {}\n\n", report.title);
        let _ = writeln!(
            out,
            "Generated {} by `{}`.\n",
            report.generated_at, report.command
        );
        let _ = writeln!(
            out,
            "**Machine:** {} cores ({}), {} GiB, {}; load generator, service, databases and Redis \
             share it.\n",
            report.machine.cores, report.machine.cpu, report.machine.memory_gib, report.machine.os
        );
        let _ = writeln!(
            out,
            "**Load:** `{}`, {} connections, {}, {:.0} s warm-up then {:.0} s measured, request \
             timeout {:.1} s.{} `/metrics` read every {} ms.\n",
            self.workload,
            plan.connections,
            match plan.rate {
                Some(rate) => format!("open loop at {} req/s", thousands(rate)),
                None => "closed loop".to_owned(),
            },
            plan.warmup.as_secs_f64(),
            plan.duration.as_secs_f64(),
            plan.timeout.as_secs_f64(),
            self.stack
                .as_ref()
                .map(|stack| format!(
                    " **Stack:** port base {}{}.",
                    stack.port_base,
                    stack
                        .dir
                        .as_ref()
                        .map(|d| format!(", dir `{d}`"))
                        .unwrap_or_default()
                ))
                .unwrap_or_default(),
            self.scrape_every_ms,
        );
        if !self.applied.is_empty() {
            out.push_str("**Fault commands** (seconds into the measured window; a command runs from *issued* to *done*):\n\n");
            for a in &self.applied {
                let _ = writeln!(
                    out,
                    "- {:.1} → {:.1}: `scripts/stack {} {}`{}",
                    a.issued,
                    a.done,
                    a.verb,
                    a.node,
                    a.error
                        .as_ref()
                        .map(|e| format!(" **failed**: {e}"))
                        .unwrap_or_default()
                );
            }
            out.push_str("\n## Per fault\n\n");
            out.push_str(&self.fault_table());
            out.push_str(
                "\n- *window*: the seconds the row's figures cover, from the fault to its recovery \
                 (or to its undo, or to the end of the run); overlapping faults share seconds.\n\
                 - *failed*: requests without a 2xx answer (no answer, a 5xx, a GraphQL error); *of \
                 which 503*: the service failing fast (breaker open, no connection to be had).\n\
                 - *left rotation after*: from the fault to the first `/metrics` read that shows the \
                 node out: `db_replica_in_rotation` at 0 for a replica, `circuit_breaker_state` not \
                 closed or `circuit_breaker_opens_total` risen for a primary or Redis. `never`: the \
                 service did not take it out (it may not have needed to). Resolution: one read \
                 interval.\n\
                 - *recovered after*: from the undo command's return (the node takes connections \
                 again) to the node back in rotation *and* a whole second without a failed request.\n\
                 - *read fallbacks*, *cache bypasses*, *rate-limit fallbacks*: what the service did \
                 instead of failing, from `db_read_fallback_total`, \
                 `cache_requests_total{result=\"bypass\"}`, \
                 `ratelimit_decisions_total{decision=\"fallback_*\"}` over the window.\n",
            );
        }
        out.push_str(&self.memory_table());
        if !self.not_restored.is_empty() {
            out.push_str("\n**Not restored at the end (undo by hand):**\n\n");
            for line in &self.not_restored {
                let _ = writeln!(out, "- {line}");
            }
        }
        out.push_str("\n## The whole run\n\n");
        out.push_str(&report.table());
        let warnings = report.warnings();
        if !warnings.is_empty() {
            out.push_str(if self.applied.is_empty() {
                "\n**Errors:**\n\n"
            } else {
                "\n**Errors** (expected here: they are what the faults cost):\n\n"
            });
            out.push_str(&warnings);
        }
        out.push_str("\n![throughput, p99, failures, fallbacks and rotation over time, with the faults](chart.svg)\n");
        out
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        crate::report::write_folder(dir, &self.markdown(), self)?;
        timechart::draw(self, &dir.join("chart.svg"))
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use hdrhistogram::Histogram;

    use super::*;
    use crate::{
        engine::{Outcome, StopReason},
        faults::Verb,
        server_timing::TimingSums,
    };

    fn measured(with_fault: bool) -> Measured {
        let series = Series::new(Duration::from_secs(10)).expect("series");
        for s in 0..10u64 {
            for _ in 0..50 {
                series.answer(Duration::from_secs(s), 200, true, 3_000);
            }
        }
        series.answer(Duration::from_secs(4), 503, false, 500);
        let buckets = series.into_buckets();
        let health: Vec<Health> = (0..20)
            .map(|i| {
                let at = f64::from(i) * 0.5;
                let mut h = Health::parse(
                    at,
                    "circuit_breaker_state{breaker=\"redis\"} 0\ndb_replica_in_rotation{shard=\"1\",replica=\"0\"} 1\n",
                );
                h.rss_bytes = Some((50.0 + at) * 1024.0 * 1024.0);
                h.maps.insert("single_flight".to_owned(), 0.0);
                if (3.0..6.0).contains(&at) {
                    h.replicas_in_rotation.insert("shard1".to_owned(), 0.0);
                }
                h
            })
            .collect();
        let applied = if with_fault {
            vec![
                Applied {
                    verb: Verb::Stop,
                    node: "shard1-replica".to_owned(),
                    issued: 2.5,
                    done: 2.8,
                    error: None,
                },
                Applied {
                    verb: Verb::Start,
                    node: "shard1-replica".to_owned(),
                    issued: 5.0,
                    done: 5.6,
                    error: None,
                },
            ]
        } else {
            Vec::new()
        };
        let faults = series::fault_rows(&spans(&applied), &buckets, &health);
        let outcome = Outcome {
            elapsed: Duration::from_secs(10),
            responses: 501,
            non_2xx: BTreeMap::from([(503, 1)]),
            errors: BTreeMap::new(),
            error_samples: Vec::new(),
            unfinished: 0,
            latency_us: Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram"),
            stopped_by: StopReason::Duration,
            classes: BTreeMap::new(),
            server_timing: TimingSums::default(),
            body_bytes: 0,
        };
        Measured {
            run: RunReport::new("write_mix", "faults", &outcome, None),
            seconds: series::seconds(&buckets),
            health,
            applied,
            faults,
        }
    }

    fn report(with_fault: bool) -> FaultReport {
        FaultReport::new(
            "test".to_owned(),
            "loadtest run".to_owned(),
            Plan::default(),
            DataOptions::default(),
            with_fault.then(|| Stack {
                script: "scripts/stack".into(),
                dir: Some("/tmp/stack".to_owned()),
                port_base: 55600,
            }),
            Duration::from_millis(500),
            measured(with_fault),
        )
    }

    #[test]
    fn the_report_folder_has_the_fault_table_the_memory_table_a_chart_and_json_that_reads_back() {
        let dir = std::env::temp_dir().join(format!("loadtest-timeline-{}", std::process::id()));
        let report = report(true);
        report.write(&dir).expect("written");
        let md = std::fs::read_to_string(dir.join("report.md")).expect("md");
        assert!(md.contains("## Per fault"), "{md}");
        assert!(
            md.contains("| stop shard1-replica | 2.5 | 5.6 | 2–"),
            "{md}"
        );
        assert!(md.contains("port base 55600"), "{md}");
        assert!(
            md.contains("| resident memory (MiB) | 50.0 | 59.5 | 59.5 | +19.0 % |"),
            "{md}"
        );
        assert!(md.contains("Failed requests: 1 of 501"), "{md}");
        let svg = std::fs::read_to_string(dir.join("chart.svg")).expect("svg");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("stop shard1-replica") && svg.contains("resident memory"));
        let back: FaultReport =
            serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("json"))
                .expect("reads back");
        // Floats come back within serde_json's parsing, not bit for bit.
        assert_eq!(back.faults.len(), 1);
        assert_eq!(back.faults[0].window, report.faults[0].window);
        assert_eq!(back.faults[0].failed, 1);
        assert_eq!(back.memory.maps, report.memory.maps);
        assert_eq!(back.health.len(), 20);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_run_without_faults_has_no_fault_section_and_no_stack() {
        let md = report(false).markdown();
        assert!(!md.contains("Per fault") && !md.contains("Stack:"), "{md}");
        assert!(md.contains("## Memory and in-process maps"), "{md}");
    }
}
