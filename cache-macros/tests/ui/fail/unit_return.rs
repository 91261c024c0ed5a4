use cache_core::cached;

#[cached(kind = "api_response")]
async fn notify(id: u64) {
    let _ = id;
}

fn main() {}
