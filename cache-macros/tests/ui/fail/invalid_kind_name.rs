use cache_core::cached;

#[cached(kind = "api response")]
async fn f(id: u64) -> u64 {
    id
}

fn main() {}
