use cache_core::cached;

#[cached(kind = "api_response", hard_timeout = "1s")]
async fn quote(symbol: &str) -> String {
    symbol.to_string()
}

fn main() {}
