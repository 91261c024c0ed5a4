use cache_core::cached;

struct Repo {
    hits: u64,
}

impl Repo {
    #[cached(kind = "database_query")]
    async fn user(&mut self, id: u64) -> String {
        self.hits += 1;
        id.to_string()
    }
}

fn main() {}
