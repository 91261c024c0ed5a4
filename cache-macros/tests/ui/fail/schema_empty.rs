use cache_core::cached;

#[cached(kind = "database_query", schema = "")]
async fn user(id: u64) -> String {
    id.to_string()
}

fn main() {}
