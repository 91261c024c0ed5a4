//! A schema cache: the full schema of a database is expensive to introspect (hundreds of
//! milliseconds), so it is cached for an hour; filtered views are computed from it and not cached
//! (`condition`); a table that cannot be described is an error cached for 60 s (`cache_errors`), so
//! a broken table does not hammer the database on every request.
//!
//! ```text
//! cargo run --example schema_cache
//! ```
//!
//! Uses `REDIS_URL` (default `redis://127.0.0.1:6379`); with no Redis it runs L1 only and says so.

use cache_core::cached;
use examples::{connect, init_logging, Timings};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

static INTROSPECTIONS: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Column {
    name: String,
    ty: String,
    nullable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Table {
    name: String,
    columns: Vec<Column>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Schema {
    tables: Vec<Table>,
}

/// Serializable, so that it can be cached (`cache_errors`).
#[derive(Debug, Clone, Serialize, Deserialize)]
enum SchemaError {
    /// The table exists but its definition cannot be read (permissions, a broken view).
    Unreadable {
        table: String,
        reason: String,
    },
    NoSuchTable(String),
}

impl std::fmt::Display for SchemaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaError::Unreadable { table, reason } => write!(f, "{table}: {reason}"),
            SchemaError::NoSuchTable(t) => write!(f, "no table {t}"),
        }
    }
}

/// The catalog the introspection reads (150 tables).
fn catalog() -> Vec<Table> {
    (0..150)
        .map(|i| Table {
            name: format!("table_{i:03}"),
            columns: (0..12)
                .map(|c| Column {
                    name: format!("col_{c}"),
                    ty: ["bigint", "text", "timestamptz", "jsonb"][c % 4].into(),
                    nullable: c % 3 == 0,
                })
                .collect(),
        })
        .collect()
}

/// The full schema: 400 ms of introspection, cached one hour (`static_data`'s TTL is two hours;
/// `ttl` overrides it). About 60 KB of MessagePack: compressed with zstd in Redis.
#[cached(kind = "static_data", ttl = 3600, key = "schema:full")]
async fn full_schema() -> Schema {
    INTROSPECTIONS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(400)).await;
    Schema { tables: catalog() }
}

/// Views over the schema: only the unfiltered one is worth caching (`condition`), filtered views
/// are cheap to compute from the cached full schema and too many to cache.
#[cached(kind = "static_data", ttl = 3600, key = "schema:view", condition = prefix.is_none())]
async fn schema_view(prefix: Option<String>) -> Vec<String> {
    let schema = full_schema().await;
    schema
        .tables
        .iter()
        .filter(|t| prefix.as_deref().is_none_or(|p| t.name.starts_with(p)))
        .map(|t| t.name.clone())
        .collect()
}

/// One table's definition: 80 ms against the database. `table_013` cannot be read: that error is
/// cached for 60 s, so retries do not reach the database.
#[cached(
    kind = "database_query",
    ttl = 3600,
    key = "schema:table:{name}",
    cache_errors = 60
)]
async fn describe(name: String) -> Result<Table, SchemaError> {
    INTROSPECTIONS.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(80)).await;
    if name == "table_013" {
        return Err(SchemaError::Unreadable {
            table: name,
            reason: "permission denied for relation".into(),
        });
    }
    catalog()
        .into_iter()
        .find(|t| t.name == name)
        .ok_or(SchemaError::NoSuchTable(name))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let cache = connect("schema-example").await?;
    cache_core::set_default_cache(cache.clone()).map_err(|_| "a default cache was set already")?;
    let mut timings = Timings::default();
    let mut timed =
        async |label: String,
               f: std::pin::Pin<Box<dyn std::future::Future<Output = String> + '_>>| {
            let before = INTROSPECTIONS.load(Ordering::Relaxed);
            let started = Instant::now();
            let shown = f.await;
            let origin = INTROSPECTIONS.load(Ordering::Relaxed) > before;
            let took = timings.record(started.elapsed(), origin);
            println!(
                "{label:<32} {took:>9.1?}  {:<8} {shown}",
                if origin { "database" } else { "cached" }
            );
        };

    println!("\n-- the full schema, cached for an hour");
    for _ in 0..3 {
        timed(
            "full_schema()".into(),
            Box::pin(async { format!("{} tables", full_schema().await.tables.len()) }),
        )
        .await;
    }
    println!("\n-- views: the unfiltered one is cached, filtered ones are computed each time");
    for prefix in [
        None,
        None,
        Some("table_01"),
        Some("table_1"),
        Some("table_01"),
    ] {
        let label = format!("schema_view({prefix:?})");
        timed(
            label,
            Box::pin(async move {
                format!(
                    "{} tables",
                    schema_view(prefix.map(String::from)).await.len()
                )
            }),
        )
        .await;
    }
    println!("\n-- single tables; table_013 fails and its error is cached for 60 s");
    for name in [
        "table_007",
        "table_013",
        "table_007",
        "table_013",
        "table_013",
        "table_999",
    ] {
        timed(
            format!("describe({name:?})"),
            Box::pin(async move {
                match describe(name.into()).await {
                    Ok(t) => format!("{} columns", t.columns.len()),
                    Err(e) => format!("Err({e})"),
                }
            }),
        )
        .await;
    }
    println!(
        "\nintrospection queries: {}",
        INTROSPECTIONS.load(Ordering::Relaxed)
    );
    let s = cache.stats();
    if let Some(k) = s.kinds.get("static_data") {
        println!(
            "static_data in Redis: {} bytes written, compression ratio {:.1}x",
            k.l2.bytes_written, k.l2.compression_ratio
        );
    }
    timings.summary(&cache);
    Ok(())
}
