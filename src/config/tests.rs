use std::{collections::BTreeMap, time::Duration};

use figment::{Figment, providers::Toml};
use serde_json::Value;

use super::*;

#[test]
fn defaults_describe_a_valid_two_shard_local_stack() {
    let config = Config::default();
    assert!(config.validate().is_ok());
    assert_eq!(config.db.shards.len(), 2);
    assert_eq!(config.db.shards[1].first_id, 1_000_000_001);
}

#[test]
fn the_example_file_documents_exactly_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
    let from_file: Config = Figment::new()
        .merge(Toml::file(&path))
        .extract()
        .expect("config/example.toml parses");
    let (file, defaults) = (
        serde_json::to_value(&from_file).expect("serializes"),
        serde_json::to_value(Config::default()).expect("serializes"),
    );
    assert_eq!(
        file, defaults,
        "config/example.toml and Config::default() drifted apart"
    );
}

#[test]
fn environment_variables_name_settings_in_upper_case() {
    assert!(is_setting("HTTP__ADDR"));
    assert!(is_setting("TELEMETRY__OTLP_ENDPOINT"));
    assert!(is_setting("PROFILE"));
    assert!(!is_setting("STACK_SHARD0_PRIMARY"));
    assert!(!is_setting("CONFIG"));
}

/// Every setting's key path (`db.replicas.max_lag`) with its default; arrays (the shard map)
/// are one setting. The optional settings are set, so that they show up too.
fn settings() -> BTreeMap<String, Value> {
    fn walk(prefix: &str, value: Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(fields) => {
                for (key, value) in fields {
                    let path = if prefix.is_empty() {
                        key
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, value, out);
                }
            }
            leaf => {
                out.insert(prefix.to_owned(), leaf);
            }
        }
    }
    let mut config = Config::default();
    config.telemetry.metrics_addr = Some(([127, 0, 0, 1], 9100).into());
    config.telemetry.otlp_endpoint = Some("http://127.0.0.1:4318/v1/traces".into());
    config.http.versioning.v1_deprecated_at = Some(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH);
    config.http.versioning.v1_sunset_at = Some(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH);
    config.http.idempotency.lease = Some(config.http.request_timeout);
    config.graphql.introspection = Some(true);
    config.graphql.graphiql = Some(true);
    config.telemetry.server_timing = Some(true);
    let mut out = BTreeMap::new();
    walk(
        "",
        serde_json::to_value(config).expect("serializes"),
        &mut out,
    );
    out
}

/// The module doc's list: each variable with the default it states, if any. A name with
/// `<TIER>` and `<CLASS>` stands for one variable per tier and route class.
fn documented_variables() -> BTreeMap<String, Option<String>> {
    include_str!("mod.rs")
        .lines()
        .filter_map(|line| line.strip_prefix("//! - `SCALABLE_API_"))
        .filter_map(|rest| {
            let (name, rest) = rest.split_once('`')?;
            let default = rest
                .strip_prefix(" (default `")
                .and_then(|d| d.split_once('`'))
                .map(|(d, _)| d.to_owned());
            Some((format!("SCALABLE_API_{name}"), default))
        })
        .flat_map(|(name, default)| {
            let mut names = vec![name];
            for (placeholder, values) in [
                ("<TIER>", LimitTier::ALL.map(LimitTier::as_str).to_vec()),
                ("<CLASS>", RouteClass::ALL.map(RouteClass::as_str).to_vec()),
            ] {
                names = names
                    .into_iter()
                    .flat_map(|name| {
                        if !name.contains(placeholder) {
                            return vec![name];
                        }
                        values
                            .iter()
                            .map(|v| name.replace(placeholder, &v.to_uppercase()))
                            .collect()
                    })
                    .collect();
            }
            names.into_iter().map(move |n| (n, default.clone()))
        })
        .collect()
}

#[test]
fn the_module_doc_lists_every_environment_variable_with_each_durations_default() {
    let documented = documented_variables();
    let mut expected = BTreeMap::new();
    for (path, default) in settings() {
        let var = format!("SCALABLE_API_{}", path.replace('.', "__").to_uppercase());
        let duration = default
            .as_str()
            .filter(|s| humantime_serde::re::humantime::parse_duration(s).is_ok());
        expected.insert(var, duration.map(str::to_owned));
    }
    let missing: Vec<_> = expected
        .keys()
        .filter(|v| !documented.contains_key(*v))
        .collect();
    let stale: Vec<_> = documented
        .keys()
        .filter(|v| !expected.contains_key(*v))
        .collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "the module doc of src/config/mod.rs is out of date: missing {missing:?}, no such setting {stale:?}"
    );
    assert_eq!(
        documented, expected,
        "each duration's default, as `(default `..`)`, and only durations'"
    );
}

#[test]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail's closure must return figment's own (large) error type"
)]
fn environment_variables_override_the_defaults() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("SCALABLE_API_GRAPHQL__DATALOADERS", "false");
        jail.set_env("SCALABLE_API_API__MAX_PAGE_SIZE", "50");
        jail.set_env("SCALABLE_API_STACK_PORT_BASE", "55400");
        let config = Config::load(None).map_err(|err| err.to_string())?;
        assert!(!config.graphql.dataloaders);
        assert_eq!(config.api.max_page_size, 50);
        Ok(())
    });
}

#[test]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail's closure must return figment's own (large) error type"
)]
fn durations_are_written_with_a_unit_in_files_and_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "service.toml",
            "[db.replicas]\ncheck_interval = \"1s\"\nmax_lag = \"2m\"\n\n[cache]\nttl = \"24h\"\n",
        )?;
        jail.set_env("SCALABLE_API_GRAPHQL__BATCH_WINDOW", "5ms");
        let config =
            Config::load(Some(Path::new("service.toml"))).map_err(|err| err.to_string())?;
        assert_eq!(config.db.replicas.check_interval, Duration::from_secs(1));
        assert_eq!(config.db.replicas.max_lag, Duration::from_secs(120));
        assert_eq!(config.cache.ttl, Duration::from_secs(24 * 3600));
        assert_eq!(config.graphql.batch_window, Duration::from_millis(5));
        Ok(())
    });
}

#[test]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail's closure must return figment's own (large) error type"
)]
fn a_duration_without_a_unit_or_under_its_old_name_is_refused() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("SCALABLE_API_GRAPHQL__BATCH_WINDOW", "20");
        let err = Config::load(None).expect_err("a bare number has no unit");
        // Figment names the key as the environment spells it.
        let message = format!("{err:#}").to_lowercase();
        assert!(message.contains("batch_window"), "{message}");
        jail.set_env("SCALABLE_API_GRAPHQL__BATCH_WINDOW", "20ms");
        jail.set_env("SCALABLE_API_GRAPHQL__BATCH_WINDOW_MS", "20");
        let err = Config::load(None).expect_err("the old key is unknown");
        let message = format!("{err:#}").to_lowercase();
        assert!(message.contains("batch_window_ms"), "{message}");
        Ok(())
    });
}

#[test]
fn the_redacted_config_shows_hosts_but_no_secret() {
    let mut config = Config::default();
    config.auth.jwt_secret = "a-production-secret-of-at-least-32-bytes".into();
    config.db.directory_url = "postgres://u:hunter1@dir.internal:5432/directory".into();
    config.db.shards[0].primary = "postgres://u:hunter2@shard0.internal/app".into();
    config.db.shards[1].replicas = vec!["postgres://u:hunter3@replica1.internal/app".into()];
    config.cache.redis_url = "redis://:hunter4@cache.internal:6379".into();
    config.ratelimit.redis_url = "redis://:hunter5@limits.internal:6379".into();
    config.http.idempotency.redis_url = "redis://:hunter6@keys.internal:6379".into();

    let shown = config.redacted();

    let text = shown.to_string();
    for secret in [
        "a-production-secret",
        "hunter1",
        "hunter2",
        "hunter3",
        "hunter4",
        "hunter5",
        "hunter6",
    ] {
        assert!(!text.contains(secret), "{secret} shown in {text}");
    }
    assert_eq!(
        shown["db"]["directory_url"],
        "postgres://u:***@dir.internal:5432/directory"
    );
    assert_eq!(
        shown["cache"]["redis_url"],
        "redis://:***@cache.internal:6379"
    );
    assert_eq!(
        shown["ratelimit"]["redis_url"],
        "redis://:***@limits.internal:6379"
    );
    assert_eq!(
        shown["http"]["idempotency"]["redis_url"],
        "redis://:***@keys.internal:6379"
    );
    assert_eq!(shown["db"]["shards"][1]["first_id"], 1_000_000_001);
    assert_eq!(shown["db"]["replicas"]["check_interval"], "250ms");
}

#[test]
fn an_https_collector_is_refused_since_the_exporter_has_no_tls() {
    let mut config = Config::default();
    config.telemetry.otlp_endpoint = Some("https://collector:4318/v1/traces".into());
    let err = config.validate().expect_err("https must be refused");
    assert!(err.to_string().contains("otlp_endpoint"), "{err}");
}

#[test]
fn overlapping_shard_ranges_are_refused() {
    let mut config = Config::default();
    config.db.shards[1].first_id = config.db.shards[0].last_id;
    let err = config.validate().expect_err("overlap must be refused");
    assert!(err.to_string().contains("overlap"), "{err}");
}

#[test]
fn the_development_secret_is_refused_on_an_address_other_machines_reach() {
    let mut config = Config::default();
    config.http.addr = ([0, 0, 0, 0], 8080).into();
    let err = config
        .validate()
        .expect_err("dev secret on 0.0.0.0 must be refused");
    assert!(err.to_string().contains("loopback"), "{err}");
    config.auth.jwt_secret = "a-real-secret-from-a-secret-store-0123456789"
        .to_owned()
        .into();
    assert!(config.validate().is_ok(), "a real secret listens anywhere");
    config.http.addr = ([127, 0, 0, 1], 8080).into();
    config.auth = AuthConfig::default();
    assert!(
        config.validate().is_ok(),
        "the dev secret on loopback is fine"
    );
}

#[test]
fn cors_origins_are_bare_origins_or_a_star() {
    let with = |origin: &str| {
        let mut config = Config::default();
        config.http.cors_origins = vec![origin.to_owned()];
        config.validate()
    };
    for good in ["https://app.example.com", "http://localhost:3000", "*"] {
        assert!(with(good).is_ok(), "{good}");
    }
    for bad in [
        "https://app.example.com/",
        "https://app.example.com/x",
        "app.example.com",
        "ftp://a.example.com",
        "",
    ] {
        let err = with(bad).expect_err(bad);
        assert!(err.to_string().contains("cors_origins"), "{err}");
    }
}

#[test]
fn production_refuses_the_development_secret() {
    let config = Config {
        profile: Profile::Production,
        ..Config::default()
    };
    let err = config.validate().expect_err("dev secret must be refused");
    assert!(err.to_string().contains("production"), "{err}");
}

#[test]
#[expect(
    clippy::result_large_err,
    reason = "figment::Jail's closure must return figment's own (large) error type"
)]
fn v1_dates_are_rfc_3339_strings_in_files_and_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "service.toml",
            "[http.versioning]\ndefault = \"v1\"\nv1_deprecated_at = \"2026-01-01T00:00:00Z\"\n",
        )?;
        jail.set_env(
            "SCALABLE_API_HTTP__VERSIONING__V1_SUNSET_AT",
            "2026-07-01T12:00:00+02:00",
        );
        let config =
            Config::load(Some(Path::new("service.toml"))).map_err(|err| err.to_string())?;
        let versioning = &config.http.versioning;
        assert_eq!(versioning.default, ApiVersion::V1);
        assert_eq!(
            versioning.v1_deprecated_at.map(|d| d.timestamp()),
            Some(1_767_225_600)
        );
        assert_eq!(
            versioning.v1_sunset_at.map(|d| d.to_rfc3339()),
            Some("2026-07-01T10:00:00+00:00".to_owned())
        );
        Ok(())
    });
}

#[test]
fn a_v1_sunset_needs_a_deprecation_before_it() {
    let date = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| d.to_utc())
            .expect("a valid RFC 3339 date")
    };
    let mut config = Config::default();
    config.http.versioning.v1_sunset_at = Some(date("2026-07-01T00:00:00Z"));
    let err = config.validate().expect_err("a sunset alone is refused");
    assert!(format!("{err:#}").contains("v1_deprecated_at"), "{err:#}");
    config.http.versioning.v1_deprecated_at = Some(date("2026-08-01T00:00:00Z"));
    let err = config
        .validate()
        .expect_err("a sunset before the deprecation is refused");
    assert!(format!("{err:#}").contains("before"), "{err:#}");
    config.http.versioning.v1_deprecated_at = Some(date("2026-01-01T00:00:00Z"));
    assert!(config.validate().is_ok());
}

#[test]
fn production_keeps_metrics_off_the_apis_address() {
    let production = || Config {
        profile: Profile::Production,
        auth: crate::config::AuthConfig {
            jwt_secret: "a-production-secret-of-at-least-32-bytes"
                .to_string()
                .into(),
            ..Default::default()
        },
        ..Config::default()
    };
    let err = production()
        .validate()
        .expect_err("metrics on the API's address");
    assert!(err.to_string().contains("metrics_addr"), "{err}");

    let mut admin = production();
    admin.telemetry.metrics_addr = Some(([127, 0, 0, 1], 9100).into());
    admin.validate().expect("metrics on an admin address");
    let mut off = production();
    off.telemetry.metrics = false;
    off.validate().expect("no metrics at all");
}

#[test]
fn an_audit_sample_rate_outside_zero_to_one_is_refused() {
    for rate in [-0.1, 1.5, f64::NAN] {
        let mut config = Config::default();
        config.consistency.audit.sample_rate = rate;
        let err = config.validate().expect_err("out of range");
        assert!(err.to_string().contains("sample_rate"), "{rate}: {err}");
    }
    let mut config = Config::default();
    config.consistency.audit.sample_rate = 1.0;
    assert!(config.validate().is_ok());
    config.consistency.audit.max_in_flight = 0;
    assert!(config.validate().is_err(), "no audit slot at all");
}

#[test]
fn the_profile_decides_what_the_api_shows_unless_a_setting_does() {
    let dev = Config::default();
    assert!(dev.introspection() && dev.graphiql() && dev.server_timing());

    let mut production = Config {
        profile: Profile::Production,
        ..Config::default()
    };
    assert!(!production.introspection() && !production.graphiql() && !production.server_timing());

    production.graphql.introspection = Some(true);
    production.graphql.graphiql = Some(true);
    production.telemetry.server_timing = Some(true);
    assert!(production.introspection() && production.graphiql() && production.server_timing());

    let mut quiet_dev = Config::default();
    quiet_dev.telemetry.server_timing = Some(false);
    assert!(!quiet_dev.server_timing());
}

#[test]
fn cache_lifetimes_and_jitter_out_of_range_are_refused_before_they_can_overflow() {
    for tweak in [
        (|c: &mut Config| c.cache.ttl_jitter = f64::INFINITY) as fn(&mut Config),
        |c| c.cache.ttl_jitter = 1e300,
        |c| c.cache.ttl_jitter = -0.1,
        |c| c.cache.ttl = Duration::from_secs(u64::MAX),
        |c| c.cache.negative_ttl = Duration::ZERO,
        |c| c.cache.l1_ttl = Duration::from_secs(365 * 24 * 3600),
    ] {
        let mut config = Config::default();
        tweak(&mut config);
        let err = config.validate().expect_err("out of range");
        assert!(err.to_string().contains("cache."), "{err}");
    }
    Config::default().validate().expect("the defaults pass");
}
