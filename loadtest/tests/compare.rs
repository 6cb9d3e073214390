//! `compare`'s own plumbing, without the service: the baseline it starts, and what it keeps
//! when a run fails. (`tests/api/loadtest.rs` runs it against the real service.)

use std::{collections::BTreeMap, time::Duration};

use loadtest::{
    compare::{CompareOptions, compare},
    engine::Plan,
    report::Report,
    workload::{DataOptions, Workload},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_keeps_the_baseline_measured_before_it_in_an_incomplete_report() {
    let out = std::env::temp_dir().join(format!("loadtest-partial-{}", std::process::id()));
    let options = CompareOptions {
        workloads: vec![Workload::UserHot],
        knob: "cache.strategy".to_owned(),
        values: vec!["none".to_owned()],
        // Exits at once: the service "fails to start".
        service_bin: "/bin/false".into(),
        service_env: BTreeMap::new(),
        redis_url: "redis://127.0.0.1:1".to_owned(),
        hello_bin: Some(env!("CARGO_BIN_EXE_loadtest").into()),
        plan: Plan {
            connections: 2,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(30),
            requests: Some(300),
            timeout: Duration::from_secs(5),
            seed: 1,
            rate: None,
            accept_encoding: None,
            carry_token: false,
        },
        data: DataOptions::default(),
        out: out.clone(),
        title: "partial".to_owned(),
        command: "test".to_owned(),
        show_progress: false,
    };

    let err = compare(&options)
        .await
        .expect_err("the service cannot start");

    let message = format!("{err:#}");
    assert!(message.contains("exited"), "{message}");
    assert!(message.contains(&out.display().to_string()), "{message}");
    let report: Report = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).expect("a report was written"),
    )
    .expect("JSON");
    let baseline = report.baseline.expect("the baseline ran first");
    assert_eq!(
        baseline.responses, 300,
        "the hello-world server answered them all"
    );
    assert_eq!(baseline.error_count() + baseline.non_2xx_count(), 0);
    assert!(report.runs.is_empty());
    assert!(report.title.contains("incomplete"), "{}", report.title);
    assert!(out.join("logs/baseline.log").exists());
    let _ = std::fs::remove_dir_all(out);
}
