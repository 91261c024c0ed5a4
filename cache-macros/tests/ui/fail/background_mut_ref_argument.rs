use cache_core::cached;

#[cached(kind = "api_response", refresh = 0.8)]
async fn quote(symbol: &mut String) -> String {
    symbol.clone()
}

fn main() {}
