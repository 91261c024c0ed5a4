use cache_core::cached;

struct Settings {
    name: String,
}

impl Settings {
    #[cached(kind = "api_response", cache = self.name)]
    async fn f(&self, id: u64) -> u64 {
        id
    }
}

fn main() {}
