use cache_core::cache_put;

#[cache_put(kind = "database_query", key = ["user:{id}", "email:{mail}"])]
async fn register(id: u64, email: String) -> String {
    format!("{id}:{email}")
}

fn main() {}
