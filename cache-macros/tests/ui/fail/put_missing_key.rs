use cache_core::cache_put;

#[cache_put(kind = "database_query", tags = ["users"])]
async fn rename(id: u64, name: String) -> String {
    format!("{id}:{name}")
}

fn main() {}
