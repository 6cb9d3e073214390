//! `scalable-api config` run as an operator runs it: the effective configuration as JSON,
//! with hosts visible (they are what one checks when a connection fails) and no secret.

use std::process::{Command, Output};

use serde_json::Value;

const JWT_SECRET: &str = "not-the-default-jwt-secret-hunter1-0123456789";

/// Runs `scalable-api config` with only `settings` from the environment: the caller's own
/// `SCALABLE_API_*` variables (a config file, the test stacks) are removed.
fn scalable_api_config(settings: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scalable-api"));
    command.arg("config");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SCALABLE_API_") {
            command.env_remove(key);
        }
    }
    command
        .envs(settings.iter().copied())
        .output()
        .expect("the binary runs")
}

#[test]
fn config_prints_the_effective_configuration_as_json_with_every_password_masked() {
    let output = scalable_api_config(&[
        (
            "SCALABLE_API_DB__DIRECTORY_URL",
            "postgres://u:hunter2@127.0.0.1:1/x",
        ),
        (
            "SCALABLE_API_DB__SHARDS",
            r#"[{id=0, first_id=1, last_id=1000, primary="postgres://u:hunter4@127.0.0.1:2/s0", replicas=["postgres://u:hunter5@127.0.0.1:3/s0"]}]"#,
        ),
        (
            "SCALABLE_API_CACHE__REDIS_URL",
            "redis://:hunter3@127.0.0.1:1",
        ),
        ("SCALABLE_API_AUTH__JWT_SECRET", JWT_SECRET),
    ]);

    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{}\n{stderr}", output.status);
    let config: Value = serde_json::from_str(&stdout).expect("stdout is one JSON document");
    assert_eq!(
        config["db"]["directory_url"],
        "postgres://u:***@127.0.0.1:1/x"
    );
    assert_eq!(
        config["db"]["shards"][0]["primary"],
        "postgres://u:***@127.0.0.1:2/s0"
    );
    assert_eq!(config["cache"]["redis_url"], "redis://:***@127.0.0.1:1");
    assert_eq!(
        config["graphql"]["batch_window"], "20ms",
        "durations with a unit"
    );
    for secret in [
        JWT_SECRET, "hunter1", "hunter2", "hunter3", "hunter4", "hunter5",
    ] {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
        assert!(!stderr.contains(secret), "{secret} logged:\n{stderr}");
    }
}

#[test]
fn a_duration_from_the_environment_takes_a_unit() {
    let output = scalable_api_config(&[("SCALABLE_API_GRAPHQL__BATCH_WINDOW", "5ms")]);
    assert!(output.status.success(), "{output:?}");
    let config: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(config["graphql"]["batch_window"], "5ms");

    let output = scalable_api_config(&[("SCALABLE_API_GRAPHQL__BATCH_WINDOW", "5")]);
    assert!(!output.status.success(), "a bare number has no unit");
    // Figment names the key as the environment spells it.
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(stderr.contains("graphql.batch_window"), "{stderr}");
}
