use cache_core::cached;

#[cached(kind = "api_response", condition = filter.len())]
async fn search(q: String, filter: String) -> Vec<String> {
    vec![q, filter]
}

fn main() {}
