//! Tells Cargo when the checked SQL (`sqlx::query!` and friends) must be expanded again.
//!
//! The query macros read the environment and `.sqlx/` while they expand, and Cargo does not
//! see those reads: without this script a build would keep stale expansions after
//! `.sqlx/` changed, and `scripts/sqlx-prepare` (which builds once against a database with
//! `SQLX_OFFLINE=false`, to describe every query afresh) could find the crate "fresh" and
//! describe nothing. Each variable or path below re-runs this script when it changes, and a
//! re-run recompiles this crate (only this crate: dependencies are untouched).
fn main() {
    for var in ["DATABASE_URL", "SQLX_OFFLINE", "SQLX_OFFLINE_DIR"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // The query data the offline build reads; and the schema, which `sqlx::migrate!` embeds
    // (a new migration file would otherwise go unnoticed until some source file changed).
    println!("cargo:rerun-if-changed=.sqlx");
    println!("cargo:rerun-if-changed=migrations");
}
