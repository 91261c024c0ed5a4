use cache_core::cached;

#[cached(kind = "api_response", cache_errors = 60)]
async fn f(id: u64) -> Option<u64> {
    Some(id)
}

fn main() {}
