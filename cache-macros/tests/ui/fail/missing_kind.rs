use cache_core::cached;

#[cached(ttl = 60)]
async fn f(id: u64) -> u64 {
    id
}

fn main() {}
