use cache_core::cached;

#[cached(kind = "database_query", none_ttl = 60)]
async fn user(id: u64) -> Result<String, std::io::Error> {
    Ok(id.to_string())
}

fn main() {}
