use cache_core::cached;

#[cached(kind = 5)]
async fn f(id: u64) -> u64 {
    id
}

fn main() {}
