use cache_core::cached;

#[cached(kind = "api_response", refresh = 1.5)]
async fn quote(symbol: &str) -> String {
    symbol.to_string()
}

fn main() {}
