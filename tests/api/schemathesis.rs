//! Schema-driven testing: schemathesis generates requests from the served OpenAPI
//! description, and GraphQL queries and mutations from the GraphQL schema (read by
//! introspection), valid and invalid ones, authenticated ones included, and checks every
//! answer: no server error, and for REST every answer as the OpenAPI describes it.
//! `scripts/test` installs it and says where (`SCALABLE_API_SCHEMATHESIS`).
//!
//! One check is left out, `positive_data_acceptance` (a request that fits the schema must be
//! accepted): the service refuses schema-valid requests for reasons no schema states, and
//! must: a cursor it did not sign, an email already taken, another user's post.
//!
//! The budgets (`--max-examples`, per operation) keep each run to a few thousand requests;
//! `SCHEMATHESIS_MAX_EXAMPLES` raises them for a longer run (docs/hardening.md).

use std::process::Command;

use crate::helpers::TestApp;

/// Runs schemathesis on `path` (the OpenAPI description, or the GraphQL endpoint) against a
/// seeded app, logged in, with `max_examples` per operation and `checks` (arguments);
/// asserts it found nothing and generated at least `at_least` requests, and returns how many
/// it generated.
async fn run(path: &str, checks: &[&str], max_examples: u32, at_least: u64) -> u64 {
    // Arrange: some data, a logged-in user for the authenticated operations, and no rate
    // limits (one address sends everything).
    let binary = std::env::var("SCALABLE_API_SCHEMATHESIS")
        .expect("SCALABLE_API_SCHEMATHESIS: run scripts/test, which installs schemathesis");
    let app = TestApp::spawn_seeded(30, 120, |config| {
        config.ratelimit.enabled = false;
    })
    .await;
    let user = app.register("fuzzed@example.com", "Fuzzed").await;
    let target = format!("{}{path}", app.base);
    let max_examples = std::env::var("SCHEMATHESIS_MAX_EXAMPLES")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(max_examples)
        .to_string();

    // Act
    let token = user.token.clone();
    let checks: Vec<String> = checks.iter().map(|arg| (*arg).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args(["run", &target])
            .env("SCHEMATHESIS_HOOKS", GRAPHQL_CHECKS)
            .args(&checks)
            // One worker: with two, hypothesis' source inspection (CPython's `ast`, not
            // thread-safe in 3.11) sometimes fails inside schemathesis itself ("AST
            // constructor recursion depth mismatch"), an error of the tool, not of the API.
            .args([
                "--max-examples",
                &max_examples,
                "--seed",
                "42",
                "--workers",
                "1",
            ])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--request-timeout", "10", "--no-color"])
            // Nothing written into the checkout: every run starts from the same seed alone.
            .args(["--generation-database", ":memory:"])
            .output()
    })
    .await
    .expect("the run finishes")
    .expect("schemathesis starts");

    // Assert
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with(|c: char| c.is_ascii_digit()) && line.contains(" generated"))
        .unwrap_or_default();
    println!("schemathesis {path}: {summary}");
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let generated: u64 = summary
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        generated >= at_least,
        "a run of at least {at_least} requests: {summary}\n{stdout}"
    );
    generated
}

/// The GraphQL run's server-error check (loaded as a schemathesis hook for both runs; it
/// applies to GraphQL answers only).
const GRAPHQL_CHECKS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/api/schemathesis_graphql.py"
);

#[tokio::test]
async fn thousands_of_generated_requests_find_no_server_error_and_no_answer_off_the_spec() {
    let checks = [
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance,graphql_no_server_error",
    ];
    run("/openapi.json", &checks, 40, 2_000).await;
}

/// Queries and mutations generated from the schema (read by introspection), as a logged-in
/// user. Schemathesis' `not_a_server_error` is swapped for `graphql_no_server_error`
/// (`schemathesis_graphql.py` says why): an error that is a refusal the API means
/// (`FORBIDDEN`, `NOT_FOUND`, ...) is not the server's failure.
#[tokio::test]
async fn a_thousand_generated_graphql_operations_find_no_server_error() {
    let checks = [
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance,not_a_server_error",
    ];
    run("/graphql", &checks, 120, 1_000).await;
}
