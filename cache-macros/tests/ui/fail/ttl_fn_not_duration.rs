use cache_core::cached;

#[cached(kind = "api_response", ttl_fn = |v: &u64| *v)]
async fn f(id: u64) -> u64 {
    id
}

fn main() {}
