use cache_core::cache_invalidate;

#[cache_invalidate]
async fn delete(id: u64) {
    let _ = id;
}

fn main() {}
