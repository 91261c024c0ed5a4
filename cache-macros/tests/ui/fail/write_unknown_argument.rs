use cache_core::cache_invalidate;

#[cache_invalidate(kind = "database_query", keys = ["user:{id}"])]
async fn delete(id: u64) {
    let _ = id;
}

fn main() {}
