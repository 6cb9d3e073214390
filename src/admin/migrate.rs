//! Schema migrations for every shard and the directory, and binding each shard to its range.

use anyhow::{Context, bail};
use sqlx::{PgPool, migrate::Migrator};

use crate::config::DbConfig;
use crate::db::Db;

/// Shard schema (`migrations/shard`), embedded in the binary so a deploy cannot run against
/// a different set of files than it was built with.
pub static SHARD: Migrator = sqlx::migrate!("./migrations/shard");
/// Directory schema (`migrations/directory`). It lives in its own database: sharing one with a
/// shard would mix the two migration histories in one `_sqlx_migrations` table.
pub static DIRECTORY: Migrator = sqlx::migrate!("./migrations/directory");

/// Migrates the directory and every shard primary, then binds each shard to its id range.
/// Safe to run again, and from several instances at once (sqlx takes an advisory lock; the
/// range binding locks `shard_identity`).
pub async fn run(db: &Db, config: &DbConfig) -> anyhow::Result<()> {
    DIRECTORY
        .run(db.directory_pool())
        .await
        .context("Failed to migrate the directory database")?;
    for (shard, shard_config) in db.cluster().iter().zip(&config.shards) {
        let pool = shard.primary_pool();
        SHARD
            .run(pool)
            .await
            .with_context(|| format!("Failed to migrate shard {}", shard.id()))?;
        bind_range(
            pool,
            shard.id(),
            shard_config.first_id,
            shard_config.last_id,
        )
        .await
        .with_context(|| format!("Failed to bind shard {} to its id range", shard.id()))?;
    }
    Ok(())
}

/// Records which shard this database is and bounds its sequences to the shard's range, the
/// first time; afterwards checks that the config still says the same.
async fn bind_range(pool: &PgPool, shard: u16, first: i64, last: i64) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query!("LOCK TABLE shard_identity IN EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let bound = sqlx::query!("SELECT shard_id, first_id, last_id FROM shard_identity")
        .map(|row| (row.shard_id, row.first_id, row.last_id))
        .fetch_optional(&mut *tx)
        .await?;
    match bound {
        Some((id, f, l)) if (id, f, l) == (i32::from(shard), first, last) => return Ok(()),
        Some((id, f, l)) => bail!(
            "this database is shard {id} with ids {f}..={l}, but the config says shard {shard} \
             with ids {first}..={last}: check the shard map (ranges cannot change once bound)"
        ),
        None => {}
    }
    sqlx::query!(
        "INSERT INTO shard_identity (shard_id, first_id, last_id) VALUES ($1, $2, $3)",
        i32::from(shard),
        first,
        last
    )
    .execute(&mut *tx)
    .await?;
    // DDL takes no bind parameters, so these are built as text (integers from a validated
    // config) and cannot be checked macros: their text is only known at run time.
    for table in ["users", "posts"] {
        sqlx::query(&format!(
            "ALTER SEQUENCE {table}_id_seq MINVALUE {first} MAXVALUE {last} \
             START WITH {first} RESTART WITH {first} NO CYCLE"
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "ALTER TABLE {table} ADD CONSTRAINT {table}_id_in_shard_range \
             CHECK (id BETWEEN {first} AND {last})"
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
