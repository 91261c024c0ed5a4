use cache_core::cached;

#[cached(kind = "database_query", key = "user:{id}", skip(db))]
async fn user(db: &str, id: u64) -> String {
    format!("{db}{id}")
}

fn main() {}
