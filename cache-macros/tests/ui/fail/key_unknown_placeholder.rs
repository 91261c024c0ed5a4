use cache_core::cached;

#[cached(kind = "database_query", key = "user:{user_id}")]
async fn user(id: u64, name: String) -> String {
    format!("{id}{name}")
}

fn main() {}
