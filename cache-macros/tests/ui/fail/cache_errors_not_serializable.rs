use cache_core::cached;

#[derive(Debug)]
struct DbError;

#[cached(kind = "database_query", cache_errors = 60)]
async fn user(id: u64) -> Result<String, DbError> {
    Ok(id.to_string())
}

fn main() {}
