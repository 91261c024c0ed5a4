use cache_core::cached;

// Concurrent callers of one key share one call of the body, and so its error: it must be Clone.
#[derive(Debug)]
struct DbError;

#[cached(kind = "database_query")]
async fn user(id: u64) -> Result<String, DbError> {
    Ok(id.to_string())
}

fn main() {}
