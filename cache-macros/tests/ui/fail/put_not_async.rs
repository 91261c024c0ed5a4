use cache_core::cache_put;

#[cache_put(kind = "database_query", key = "user:{id}")]
fn rename(id: u64, name: String) -> String {
    format!("{id}:{name}")
}

fn main() {}
