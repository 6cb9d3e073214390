//! The deployment files against the service they deploy: every `SCALABLE_API_*` variable that
//! `docker-compose.yml`, the `Dockerfile` and `k8s/` set is a setting the service reads, with a
//! value it accepts, and the ports and paths the files share agree with each other and with
//! the service (Prometheus' scrape port, the probes' paths, the OTLP endpoint and Jaeger).
//!
//! No container runs here: `scripts/check-deploy` validates the same files against their
//! schemas; this test checks what no schema knows, the service's own settings and routes.
//!
//! Loading the variables is not enough to prove they are read. The loader's structs refuse
//! unknown fields (`SCALABLE_API_HTTP__ADRR` fails), but it keeps only variables of the known
//! sections, so `SCALABLE_API_HTPP__ADDR` would be dropped in silence. Hence each variable is
//! also looked up in the effective configuration that `scalable-api config` prints: a variable
//! that is read shows there under its own path.
//!
//! The files are YAML, read here line by line (the service has no YAML parser among its
//! dependencies): a setting is one line, `SCALABLE_API_X: value` in YAML, `SCALABLE_API_X=value`
//! in an env file or a Dockerfile `ENV`. A `SCALABLE_API_` name anywhere else on a line that
//! is not a comment fails the test, so a setting written some other way cannot slip past.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

const PREFIX: &str = "SCALABLE_API_";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `*.yaml` and `*.env` under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a readable directory entry").path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "env")
        {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// A YAML scalar as written on one line: quotes removed, a trailing comment cut.
fn scalar(raw: &str) -> String {
    let raw = raw.trim();
    for quote in ['\'', '"'] {
        if let Some(rest) = raw.strip_prefix(quote) {
            return rest.split(quote).next().unwrap_or_default().to_string();
        }
    }
    raw.split(" #")
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// The settings `text` sets, in the three one-line forms (see the module doc).
fn settings_in(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|line| !is_comment(line))
        .filter_map(|line| {
            let line = line.trim_start();
            let line = line.strip_prefix("ENV ").unwrap_or(line);
            if !line.starts_with(PREFIX) {
                return None;
            }
            let name_end = line
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(line.len());
            let (name, rest) = line.split_at(name_end);
            let value = match rest.chars().next() {
                Some(':') => scalar(&rest[1..]),
                Some('=') => rest[1..].trim().to_string(),
                _ => return None,
            };
            Some((name.to_string(), value))
        })
        .collect()
}

/// Every `SCALABLE_API_*` name on the lines of `text` that are not comments.
fn names_mentioned_in(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines().filter(|line| !is_comment(line)) {
        let mut rest = line;
        while let Some(at) = rest.find(PREFIX) {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

/// One environment: each name once (a name set twice to two values is ambiguous: which one
/// a container gets depends on merge order, so the files must not do it).
fn environment(sets: &[(String, String)]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (name, value) in sets {
        if let Some(before) = env.insert(name.clone(), value.clone()) {
            assert_eq!(&before, value, "{name} is set twice, to two values");
        }
    }
    env
}

/// `scalable-api config` with `env` as its only `SCALABLE_API_*` variables: the effective
/// configuration as JSON, or the loader's error.
fn effective_config(env: &BTreeMap<String, String>) -> Result<Value, String> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_scalable-api"));
    command.arg("config");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(PREFIX) {
            command.env_remove(key);
        }
    }
    let output = command.envs(env).output().expect("the binary runs");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("stdout is not JSON: {e}"))
}

/// The value `name` sets in the printed configuration: `SCALABLE_API_DB__REPLICAS__MAX_LAG`
/// is `db.replicas.max_lag`.
fn lookup<'a>(config: &'a Value, name: &str) -> Option<&'a Value> {
    let path = name.strip_prefix(PREFIX)?;
    path.split("__")
        .try_fold(config, |node, key| node.get(key.to_ascii_lowercase()))
        .filter(|value| !value.is_null())
}

/// Loads `env` with the service's loader and returns its effective configuration, or what is
/// wrong: the loader's refusal, or the names it did not read.
fn check_settings(env: &BTreeMap<String, String>) -> Result<Value, String> {
    let config = effective_config(env)?;
    let unread: Vec<&String> = env
        .keys()
        .filter(|name| lookup(&config, name).is_none())
        .collect();
    if unread.is_empty() {
        Ok(config)
    } else {
        Err(format!("not settings the service reads: {unread:?}"))
    }
}

/// The settings of `path` (relative to the repository), after checking that no
/// `SCALABLE_API_` name in it is written in a form this test does not read.
fn settings_of(path: &str) -> Vec<(String, String)> {
    let text = read(path);
    let sets = settings_in(&text);
    for name in names_mentioned_in(&text) {
        assert!(
            sets.iter().any(|(set, _)| *set == name),
            "{path}: {name} is not set on a line of its own (`{name}: value` or `{name}=value`)"
        );
    }
    sets
}

fn compose_environment() -> BTreeMap<String, String> {
    environment(&settings_of("docker-compose.yml"))
}

/// An overlay's environment: the base's ConfigMap with the overlay's merged over it, and the
/// Secret (`envFrom` both, as the Deployment does).
fn kubernetes_environment(overlay: &str) -> BTreeMap<String, String> {
    let mut env = environment(&settings_of("k8s/base/scalable-api.env"));
    env.extend(environment(&settings_of(&format!(
        "k8s/overlays/{overlay}/scalable-api.env"
    ))));
    for (name, value) in settings_of("k8s/base/secret.yaml") {
        assert!(
            env.insert(name.clone(), value).is_none(),
            "{name} is in both the ConfigMap and the Secret"
        );
    }
    env
}

/// The port of a `host:port` or `scheme://host:port/path`.
fn port_of(address: &str) -> u16 {
    let after_scheme = address.split("://").last().unwrap_or(address);
    let host_port = after_scheme.split('/').next().unwrap_or_default();
    host_port
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {address}"))
}

/// The value of the first `key:` line after the first line containing `anchor`.
fn value_after(text: &str, anchor: &str, key: &str) -> String {
    let mut lines = text.lines().skip_while(|line| !line.contains(anchor));
    assert!(lines.next().is_some(), "no `{anchor}` in the file");
    let key = format!("{key}:");
    lines
        .find_map(|line| line.trim_start().strip_prefix(key.as_str()).map(scalar))
        .unwrap_or_else(|| panic!("no `{key}` after `{anchor}`"))
}

/// A top-level service's block of docker-compose.yml (its lines up to the next service).
fn compose_service<'a>(compose: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("  {name}:");
    let mut lines = compose.lines().skip_while(|line| *line != header);
    assert!(
        lines.next().is_some(),
        "docker-compose.yml has no service `{name}`"
    );
    lines
        .take_while(|line| {
            line.is_empty() || line.starts_with("    ") || line.trim_start().starts_with('#')
        })
        .collect()
}

/// Whether the service answers `path` (the OpenAPI description, which
/// `tests/api/openapi.rs` keeps equal to the mounted routes).
fn is_route(path: &str) -> bool {
    scalable_api::http::openapi::document()
        .paths
        .paths
        .contains_key(path)
}

fn seconds(duration: &str) -> u64 {
    duration
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{duration} is not a whole number of seconds"))
}

#[test]
fn every_setting_the_compose_file_and_the_image_set_is_one_the_service_reads() {
    let mut env = environment(&settings_of("Dockerfile"));
    // The compose file's settings come after the image's, as in the container.
    env.extend(compose_environment());

    let config = check_settings(&env).unwrap_or_else(|e| panic!("docker-compose.yml: {e}"));

    assert_eq!(
        config["profile"], "dev",
        "the compose stack is for looking inside"
    );
}

#[test]
fn every_setting_each_kubernetes_overlay_sets_is_one_the_service_reads() {
    for overlay in ["dev", "prod"] {
        let env = kubernetes_environment(overlay);

        check_settings(&env).unwrap_or_else(|e| panic!("k8s/overlays/{overlay}: {e}"));
    }
}

#[test]
fn no_deployment_file_names_a_setting_outside_its_settings_lines() {
    // Everything that could pass variables to the service: each file's names must all be on
    // setting lines (checked by `settings_of`), and those are loaded by the tests above.
    let mut files = vec![repo().join("docker-compose.yml"), repo().join("Dockerfile")];
    files.extend(files_under(&repo().join("k8s")));
    let loaded = [
        "docker-compose.yml",
        "Dockerfile",
        "k8s/base/scalable-api.env",
        "k8s/base/secret.yaml",
        "k8s/overlays/dev/scalable-api.env",
        "k8s/overlays/prod/scalable-api.env",
    ];
    for file in files {
        let relative = file
            .strip_prefix(repo())
            .expect("under the repository")
            .to_string_lossy()
            .into_owned();
        let text = read(&relative);
        if loaded.contains(&relative.as_str()) {
            settings_of(&relative);
        } else {
            let names = names_mentioned_in(&text);
            assert!(
                names.is_empty(),
                "{relative} names {names:?}; settings belong in the files the tests load: {loaded:?}"
            );
        }
    }
}

#[test]
fn a_misspelt_setting_or_section_fails_the_check() {
    // A field the section does not have: the loader refuses it.
    let field = environment(&settings_in("SCALABLE_API_HTTP__ADRR: 0.0.0.0:8080\n"));
    let refused = check_settings(&field).expect_err("an unknown field is refused");
    assert!(refused.to_lowercase().contains("adrr"), "{refused}");

    // A section the service does not have: the loader skips it in silence, the lookup does not.
    let section = environment(&settings_in(
        "SCALABLE_API_HTPP__ADDR=127.0.0.1:8081\nSCALABLE_API_HTTP__ADDR=127.0.0.1:8081\n",
    ));
    let unread = check_settings(&section).expect_err("an unknown section is not read");
    assert!(unread.contains("SCALABLE_API_HTPP__ADDR"), "{unread}");
    assert!(!unread.contains("SCALABLE_API_HTTP__ADDR"), "{unread}");
}

#[test]
fn ports_and_paths_agree_across_the_compose_file_prometheus_nginx_and_jaeger() {
    let compose = read("docker-compose.yml");
    let env = compose_environment();
    let api_port = port_of(&env["SCALABLE_API_HTTP__ADDR"]);
    assert!(
        !env.contains_key("SCALABLE_API_TELEMETRY__METRICS_ADDR"),
        "with an admin address, Prometheus must scrape its port instead"
    );

    // Prometheus finds the instances by the compose service's name, on the API's port.
    let prometheus = read("deploy/prometheus/prometheus.yml");
    assert_eq!(
        value_after(&prometheus, "dns_sd_configs:", "port"),
        api_port.to_string()
    );
    assert_eq!(
        value_after(&prometheus, "dns_sd_configs:", "- names"),
        "[\"api\"]"
    );
    compose_service(&compose, "api");

    // Grafana's data source is the compose Prometheus.
    let datasource = read("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(
        value_after(&datasource, "type: prometheus", "url"),
        "http://prometheus:9090"
    );
    assert!(compose_service(&compose, "prometheus").contains(&"      - \"9090:9090\""));

    // The health check asks this port for the readiness route.
    let api = compose_service(&compose, "api").join("\n");
    let readiness = format!("http://127.0.0.1:{api_port}/readyz");
    assert!(
        api.contains(&readiness),
        "the api health check is not {readiness}"
    );
    assert!(is_route("/readyz"));

    // nginx sends to the api service on that port.
    let nginx = compose_service(&compose, "nginx").join("\n");
    assert!(
        nginx.contains(&format!("API_UPSTREAM: api:{api_port}")),
        "{nginx}"
    );
    let template = read("deploy/nginx/scalable-api.conf.template");
    assert!(template.contains("server ${API_UPSTREAM}"));
    assert!(template.contains("listen ${API_PUBLIC_PORT};"));

    // Traces go to Jaeger's OTLP/HTTP port, on the traces path.
    let otlp = &env["SCALABLE_API_TELEMETRY__OTLP_ENDPOINT"];
    assert!(otlp.starts_with("http://jaeger:"), "{otlp}");
    assert!(otlp.ends_with("/v1/traces"), "{otlp}");
    let jaeger = compose_service(&compose, "jaeger").join("\n");
    assert!(
        jaeger.contains(&format!("- \"{}\"", port_of(otlp))),
        "jaeger does not expose {otlp}'s port:\n{jaeger}"
    );
}

#[test]
fn ports_paths_and_grace_agree_across_the_kubernetes_manifests_and_the_service() {
    let deployment = read("k8s/base/deployment.yaml");
    let service = read("k8s/base/service.yaml");
    let env = kubernetes_environment("prod");

    // The container ports are the service's addresses.
    let api_port = port_of(&env["SCALABLE_API_HTTP__ADDR"]);
    let metrics_port = port_of(&env["SCALABLE_API_TELEMETRY__METRICS_ADDR"]);
    assert_eq!(
        value_after(&deployment, "- name: http", "containerPort"),
        api_port.to_string()
    );
    assert_eq!(
        value_after(&deployment, "- name: metrics", "containerPort"),
        metrics_port.to_string()
    );
    assert_eq!(
        value_after(&deployment, "annotations:", "prometheus.io/port"),
        metrics_port.to_string(),
        "Prometheus must scrape the admin port: /metrics is not on the API's"
    );
    assert_eq!(value_after(&service, "ports:", "targetPort"), "http");

    // The probes ask for routes the service has: liveness without I/O, readiness with it.
    let liveness = value_after(&deployment, "livenessProbe:", "path");
    let readiness = value_after(&deployment, "readinessProbe:", "path");
    assert_eq!(
        (liveness.as_str(), readiness.as_str()),
        ("/healthz", "/readyz")
    );
    assert!(is_route(&liveness) && is_route(&readiness));

    // SIGKILL comes after the preStop pause plus the whole drain, never during it.
    let config = check_settings(&env).unwrap_or_else(|e| panic!("k8s/overlays/prod: {e}"));
    let grace = config["http"]["shutdown_grace"]
        .as_str()
        .expect("a duration prints as a string");
    let pause: u64 = value_after(&deployment, "preStop:", "seconds")
        .parse()
        .expect("whole seconds");
    let termination: u64 = value_after(&deployment, "spec:", "terminationGracePeriodSeconds")
        .parse()
        .expect("whole seconds");
    assert!(
        termination > pause + seconds(grace),
        "terminationGracePeriodSeconds {termination} does not cover the {pause} s pause and the {grace} drain"
    );
}
