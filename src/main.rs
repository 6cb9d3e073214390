//! `scalable-api`: serve the API, migrate the databases, load demo data.
//!
//! Thin on purpose: config -> telemetry -> build -> run. Everything else lives in the library
//! so the integration tests run the same code.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use scalable_api::{
    App, Config,
    admin::{migrate, seed},
    config::CacheStrategy,
    serve, shutdown_signal, telemetry,
};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML config file layered over the defaults (see config/example.toml).
    #[arg(long, env = "SCALABLE_API_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API until Ctrl-C or SIGTERM.
    Serve,
    /// Apply migrations to the directory and every shard, and bind each shard to its id range.
    Migrate,
    /// Load the deterministic demo data set (password of every demo user: `demo-password`).
    Seed {
        #[arg(long, default_value_t = 100_000)]
        users: u64,
        #[arg(long, default_value_t = 1_000_000)]
        posts: u64,
        /// Replace existing users, posts and directory entries.
        #[arg(long)]
        reset: bool,
        /// Do nothing if the shards already hold users.
        #[arg(long, conflicts_with = "reset")]
        if_empty: bool,
        /// Confirm --reset without being asked (scripts; a terminal is asked to type `reset`).
        #[arg(long, requires = "reset")]
        yes: bool,
    },
    /// Print the effective configuration as JSON, the JWT secret and every URL password masked.
    Config,
}

/// Asks a person at a terminal to confirm `seed --reset`; without a terminal, `--yes` must.
fn confirm_reset(config: &Config) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    anyhow::ensure!(
        stdin.is_terminal(),
        "seed --reset deletes every user, post and directory entry: pass --yes to confirm without a terminal"
    );
    let shards = config.db.shards.len();
    print!(
        "seed --reset deletes every user, post and directory entry on {shards} shard(s) and the directory. Type `reset` to go on: "
    );
    std::io::stdout().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    anyhow::ensure!(
        answer.trim() == "reset",
        "seed --reset: not confirmed; nothing changed"
    );
    Ok(())
}

/// mimalloc instead of glibc's malloc: per-thread free lists and no arena locks, for a service
/// that allocates small objects per request (see docs/benchmarks.md for what it measured).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    // Kept to the end: dropping it flushes the spans still queued for export.
    let _telemetry = telemetry::init(&config)?;
    let app = App::build(config)?;
    match cli.command {
        Command::Serve => {
            let listener = tokio::net::TcpListener::bind(app.config.http.addr)
                .await
                .with_context(|| format!("Failed to bind {}", app.config.http.addr))?;
            tracing::info!(addr = %listener.local_addr()?, profile = ?app.config.profile, "serving");
            if app.config.auth.uses_dev_secret() {
                tracing::warn!(
                    "access tokens are signed with the development secret from the source: accepted on loopback only; set SCALABLE_API_AUTH__JWT_SECRET anywhere else"
                );
            }
            serve(listener, app, shutdown_signal()).await?;
        }
        Command::Migrate => {
            migrate::run(&app.db, &app.config.db).await?;
            tracing::info!(
                shards = app.db.cluster().len(),
                "migrated the directory and every shard"
            );
        }
        Command::Seed {
            users,
            posts,
            reset,
            if_empty,
            yes,
        } => {
            seed::allowed(app.config.profile)?;
            if reset && !yes {
                confirm_reset(&app.config)?;
            }
            let options = seed::SeedOptions {
                users,
                posts,
                reset,
                if_empty,
            };
            let report = seed::seed(&app.db, options).await?;
            if reset && !report.skipped {
                // The cache's and the idempotency store's entries name the replaced rows.
                let (cache, idempotency) = (&app.config.cache, &app.config.http.idempotency);
                let mut stores = Vec::new();
                if cache.strategy != CacheStrategy::None {
                    stores.push((cache.redis_url.expose(), cache.key_prefix.as_str()));
                }
                if idempotency.enabled {
                    stores.push((
                        idempotency.redis_url.expose(),
                        idempotency.key_prefix.as_str(),
                    ));
                }
                for (url, prefix) in stores {
                    let dropped = seed::forget_cached(url, prefix).await?;
                    println!("seed: dropped {dropped} Redis entries under {prefix}:");
                }
            }
            if report.skipped {
                println!(
                    "seed: the shards already hold users; nothing loaded (use --reset to replace them)"
                );
            } else {
                println!(
                    "seed: loaded {} users and {} posts in {:.1}s",
                    report.users,
                    report.posts,
                    report.elapsed.as_secs_f64()
                );
            }
        }
        Command::Config => {
            println!("{}", serde_json::to_string_pretty(&app.config.redacted())?);
        }
    }
    Ok(())
}
