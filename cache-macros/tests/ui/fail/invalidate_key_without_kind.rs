use cache_core::cache_invalidate;

#[cache_invalidate(key = "user:{id}")]
async fn delete(id: u64) {
    let _ = id;
}

fn main() {}
