use cache_core::cached;

#[cached(kind = "api_response", ttl = 60, ttl = 120)]
async fn f(id: u64) -> u64 {
    id
}

fn main() {}
