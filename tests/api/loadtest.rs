//! The load-test tool's `compare` against the real service binary on the real stack: each
//! setting reaches a freshly started service, its SQL and cache figures come from that
//! service's own metrics, and each run's cache keys are gone afterwards.

use std::{collections::BTreeMap, time::Duration};

use loadtest::{
    compare::{CompareOptions, compare},
    engine::Plan,
    process::count_keys,
    workload::{DataOptions, Workload},
};

use crate::helpers::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_runs_each_strategy_on_a_fresh_service_and_reads_its_sql_and_cache_figures() {
    let app = TestApp::spawn_seeded(200, 1_000, |_| {}).await;
    let dir = std::env::temp_dir().join(format!("loadtest-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("service.toml");
    std::fs::write(&config, app.config_file()).expect("config written");
    let options = CompareOptions {
        workloads: vec![Workload::UserHot, Workload::WriteMix],
        knob: "cache.strategy".to_owned(),
        values: vec!["none".to_owned(), "cache-aside".to_owned()],
        service_bin: env!("CARGO_BIN_EXE_scalable-api").into(),
        service_env: BTreeMap::from([(
            "SCALABLE_API_CONFIG".to_owned(),
            config.display().to_string(),
        )]),
        redis_url: app.stack.redis.clone(),
        hello_bin: None,
        plan: Plan {
            connections: 8,
            warmup: Duration::from_millis(500),
            duration: Duration::from_millis(1500),
            requests: None,
            timeout: Duration::from_secs(5),
            seed: 7,
            rate: None,
            accept_encoding: None,
            carry_token: false,
        },
        data: DataOptions {
            writers: 2,
            ..DataOptions::default()
        },
        out: dir.join("report"),
        title: "test".to_owned(),
        command: "test".to_owned(),
        show_progress: false,
    };

    let report = compare(&options).await.expect("the comparison runs");
    eprintln!("{}", report.table());

    assert_eq!(report.user_count, 200, "ids come from the service");
    assert_eq!(report.runs.len(), 4);
    for run in &report.runs {
        assert!(
            run.responses > 50,
            "{}/{}: {} answers",
            run.workload,
            run.setting,
            run.responses
        );
        assert_eq!(run.error_count() + run.non_2xx_count(), 0, "{run:?}");
    }
    let figure = |workload: &str, setting: &str| {
        report
            .runs
            .iter()
            .find(|r| r.workload == workload && r.setting == setting)
            .expect("run present")
    };
    // Without a cache every GET /v1/users/{id} is one SQL statement; with cache-aside each
    // of the 200 users is read at most once (single flight), the rest are hits. Requests in
    // flight at either metrics scrape (at most one per connection each) blur the edges.
    let edges = 2.0 * options.plan.connections as f64;
    let none = figure("user_hot", "none");
    // The service's peak memory is read from its process (a test binary is tens of MiB).
    assert!(
        none.peak_rss_mib.is_some_and(|mib| mib > 1.0),
        "peak RSS of the service: {:?}",
        none.peak_rss_mib
    );
    let answers = none.responses as f64;
    let sql = none.sql_per_request.expect("the service has metrics") * answers;
    assert!(
        (sql - answers).abs() <= edges,
        "none: {sql} SQL for {answers} answers"
    );
    assert_eq!(none.cache_hit_ratio, None, "no cache, no lookups");
    // The same from each answer's Server-Timing, summed by the load generator: exact per
    // answer, no scrape edges (a replica failing mid-run would add a retry).
    let timing = |run: &loadtest::report::RunReport, metric: &str| {
        run.server_timing
            .get(metric)
            .copied()
            .unwrap_or_else(|| panic!("{metric} in {:?}", run.server_timing))
    };
    let queries = timing(none, "db").count.expect("db says how many queries");
    assert!(
        (1.0..1.05).contains(&queries),
        "none: {queries} queries per answer"
    );
    assert!(timing(none, "total").ms >= timing(none, "db").ms);
    assert!(
        !none.server_timing.contains_key("cache"),
        "no cache, no round trips"
    );
    let cached = figure("user_hot", "cache-aside");
    let answers = cached.responses as f64;
    let sql = cached.sql_per_request.expect("metrics") * answers;
    let hits = cached.cache_hit_ratio.expect("cache lookups") * answers;
    assert!(
        sql <= 200.0 + edges,
        "cache-aside: {sql} SQL for {answers} answers"
    );
    assert!(
        hits >= answers - 200.0 - edges,
        "cache-aside: {hits} hits of {answers}"
    );
    let round_trips = timing(cached, "cache").count.expect("a count");
    assert!(
        round_trips >= 1.0,
        "cache-aside: every read looks Redis up: {round_trips} per answer"
    );
    let queries = cached
        .server_timing
        .get("db")
        .and_then(|db| db.count)
        .unwrap_or(0.0);
    assert!(
        queries * answers <= 200.0 + edges,
        "cache-aside: {queries} queries per answer of {answers}"
    );
    // Writes really happened, as the logged-in demo users: posts grew.
    let posts: i64 = {
        let mut total = 0;
        for i in 0..2 {
            total += sqlx::query_scalar::<_, i64>("SELECT count(*) FROM posts")
                .fetch_one(&app.primary(i).await)
                .await
                .expect("count");
        }
        total
    };
    assert!(posts > 1_000, "write_mix created posts: {posts}");
    for n in 1..=4 {
        let prefix = format!("loadtest-{}-{n}", std::process::id());
        assert_eq!(
            count_keys(&app.stack.redis, &prefix).await.expect("Redis"),
            0,
            "run {n}'s keys are deleted"
        );
    }
    let json = std::fs::read_to_string(options.out.join("report.json")).expect("report.json");
    assert!(json.contains("\"cache-aside\""));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_runs_the_rate_limits_off_and_on_out_of_reach_in_one_command() {
    let app = TestApp::spawn_seeded(50, 0, |_| {}).await;
    let dir = std::env::temp_dir().join(format!("loadtest-ratelimit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("service.toml");
    std::fs::write(&config, app.config_file()).expect("config written");
    let options = CompareOptions {
        workloads: vec![Workload::UserHot],
        knob: "ratelimit".to_owned(),
        values: vec!["off".to_owned(), "gcra".to_owned()],
        service_bin: env!("CARGO_BIN_EXE_scalable-api").into(),
        service_env: BTreeMap::from([
            (
                "SCALABLE_API_CONFIG".to_owned(),
                config.display().to_string(),
            ),
            (
                "SCALABLE_API_CACHE__STRATEGY".to_owned(),
                "two-tier".to_owned(),
            ),
            // A budget the load would spend at once, unless the knob raises it out of reach.
            (
                "SCALABLE_API_RATELIMIT__TIERS__ANONYMOUS__READS__RATE".to_owned(),
                "20".to_owned(),
            ),
            (
                "SCALABLE_API_RATELIMIT__TIERS__ANONYMOUS__READS__BURST".to_owned(),
                "20".to_owned(),
            ),
        ]),
        redis_url: app.stack.redis.clone(),
        hello_bin: None,
        plan: Plan {
            connections: 8,
            warmup: Duration::from_millis(300),
            duration: Duration::from_millis(1500),
            requests: None,
            timeout: Duration::from_secs(5),
            seed: 7,
            rate: None,
            accept_encoding: None,
            carry_token: false,
        },
        data: DataOptions::default(),
        out: dir.join("report"),
        title: "test".to_owned(),
        command: "test".to_owned(),
        show_progress: false,
    };

    let report = compare(&options).await.expect("the comparison runs");
    eprintln!("{}", report.table());

    let settings: Vec<&str> = report.runs.iter().map(|r| r.setting.as_str()).collect();
    assert_eq!(settings, ["off", "gcra"]);
    for run in &report.runs {
        // One address sends them all: past the burst of 20 set above, every one of them would
        // be a 429 unless the knob put the budgets out of reach.
        assert!(
            run.responses > 40,
            "{}: {} answers",
            run.setting,
            run.responses
        );
        assert_eq!(run.error_count() + run.non_2xx_count(), 0, "{run:?}");
    }
    for n in 1..=2 {
        let prefix = format!("loadtest-{}-{n}", std::process::id());
        assert_eq!(
            count_keys(&app.stack.redis, &prefix).await.expect("Redis"),
            0,
            "run {n}'s cache and rate-limit keys are deleted"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overload_workload_reports_each_class_and_shows_shedding_on_against_off() {
    let app = TestApp::spawn_seeded(50, 200, |_| {}).await;
    let dir = std::env::temp_dir().join(format!("loadtest-overload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("service.toml");
    std::fs::write(&config, app.config_file()).expect("config written");
    // A limit of 2 with 3 places in the queue, against 8 clients: four times its capacity.
    let service_env = [
        ("SCALABLE_API_CONFIG", config.display().to_string()),
        ("SCALABLE_API_SHEDDING__INITIAL_LIMIT", "2".to_owned()),
        ("SCALABLE_API_SHEDDING__MIN_LIMIT", "2".to_owned()),
        ("SCALABLE_API_SHEDDING__MAX_LIMIT", "2".to_owned()),
        ("SCALABLE_API_SHEDDING__QUEUE_SIZE", "3".to_owned()),
    ];
    let options = CompareOptions {
        workloads: vec![Workload::Overload],
        knob: "shedding.enabled".to_owned(),
        values: vec!["true".to_owned(), "false".to_owned()],
        service_bin: env!("CARGO_BIN_EXE_scalable-api").into(),
        service_env: service_env
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        redis_url: app.stack.redis.clone(),
        hello_bin: None,
        plan: Plan {
            connections: 8,
            warmup: Duration::from_millis(300),
            duration: Duration::from_millis(1500),
            requests: None,
            timeout: Duration::from_secs(5),
            seed: 7,
            rate: None,
            accept_encoding: None,
            carry_token: false,
        },
        data: DataOptions {
            writers: 4,
            // More logins than the default 1 %, so that a short run has some.
            mix: "anonymous_lists=50,free_reads=25,writes=15,logins=10"
                .parse()
                .expect("a mix"),
            ..DataOptions::default()
        },
        out: dir.join("report"),
        title: "test".to_owned(),
        command: "test".to_owned(),
        show_progress: false,
    };

    let report = compare(&options).await.expect("the comparison runs");
    eprintln!("{}", report.table());

    assert_eq!(report.runs.len(), 2);
    for run in &report.runs {
        let classes: Vec<&str> = run.classes.keys().map(String::as_str).collect();
        assert_eq!(
            classes,
            ["anonymous_lists", "free_reads", "logins", "writes"],
            "{}",
            run.setting
        );
        assert!(run.classes.values().all(|c| c.requests > 0), "{run:?}");
    }
    let (on, off) = (&report.runs[0], &report.runs[1]);
    assert!(
        on.classes["anonymous_lists"].shed > 0,
        "shedding on refuses anonymous lists: {:?}",
        on.classes
    );
    assert!(
        off.classes.values().all(|c| c.shed == 0),
        "shedding off refuses nothing: {:?}",
        off.classes
    );
    assert_eq!(report.warnings(), "", "sheds are the point, not failures");
    assert!(
        report
            .table()
            .contains("| overload | true | anonymous_lists |"),
        "the per-class table:\n{}",
        report.table()
    );
    let _ = std::fs::remove_dir_all(dir);
}
