use cache_core::cache_put;

struct Connection;

#[cache_put(kind = "database_query", key = "conn:{id}")]
async fn connect(id: u64) -> Result<Connection, String> {
    let _ = id;
    Ok(Connection)
}

fn main() {}
