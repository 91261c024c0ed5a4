use cache_core::cache_invalidate;

#[cache_invalidate(kind = "database_query", tags = ["user:{id}"])]
async fn delete(id: u64) {
    let _ = id;
}

fn main() {}
