use cache_core::cache_invalidate;

#[cache_invalidate(kind = "database_query", key = "user:{id}", before = 1)]
async fn delete(id: u64) {
    let _ = id;
}

fn main() {}
