use cache_core::cached;

#[cached(kind = "api_response", soft_timeout = 100)]
async fn quote(symbol: &str) -> String {
    symbol.to_string()
}

fn main() {}
