use cache_core::{cached, Cache};

struct Quotes {
    cache: Cache,
}

impl Quotes {
    #[cached(kind = "api_response", soft_timeout = "100ms", cache = self.cache)]
    async fn quote(&self, symbol: &str) -> String {
        symbol.to_string()
    }
}

fn main() {}
