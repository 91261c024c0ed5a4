use cache_core::cache_put;

#[cache_put(kind = "database_query", key = "user:{id}")]
async fn rename(id: u64, name: String) {
    let _ = (id, name);
}

fn main() {}
