// Without `key` or `skip`, the arguments form the key and must be `Serialize`.
use cache_core::cached;

struct Pool;

#[cached(kind = "database_query")]
async fn user(pool: &Pool, id: u64) -> String {
    let _ = pool;
    id.to_string()
}

fn main() {}
