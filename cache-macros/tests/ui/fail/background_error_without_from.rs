use cache_core::cached;

#[cached(kind = "api_response", hard_timeout = "2s")]
async fn quote(symbol: &str) -> Result<String, String> {
    Ok(symbol.to_string())
}

fn main() {}
