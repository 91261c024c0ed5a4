use cache_core::cached;

#[cached(kind = "api_response", ttl = "300")]
async fn f(id: u64) -> u64 {
    id
}

fn main() {}
