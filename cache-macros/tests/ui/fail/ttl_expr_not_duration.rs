use cache_core::cached;

const TTL_SECS: u64 = 60;

#[cached(kind = "api_response", ttl = TTL_SECS)]
async fn f(id: u64) -> u64 {
    id
}

fn main() {}
