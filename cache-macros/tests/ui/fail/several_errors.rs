// Every broken rule is reported, not only the first.
use cache_core::cached;

#[cached(kind = "database_query", key = "user:{uid}", none_ttl = 5)]
fn user(id: u64) -> String {
    id.to_string()
}

fn main() {}
