use cache_core::cached;

#[cached(kind = "database_query", key = ["user:{id}", "u:{id}"])]
async fn user(id: u64) -> String {
    id.to_string()
}

fn main() {}
