use cache_core::cached;

#[cached(kind = "static_data", warm)]
async fn countries(region: String) -> Vec<String> {
    vec![region]
}

fn main() {}
