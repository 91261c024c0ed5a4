use cache_core::cached;

#[cached(kind = "api_response", ttl = 60, ttl_fn = |v: &u64| std::time::Duration::from_secs(*v))]
async fn f(id: u64) -> u64 {
    id
}

fn main() {}
