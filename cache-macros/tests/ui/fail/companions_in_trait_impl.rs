use cache_core::{cached, Cache};

struct Repo {
    cache: Cache,
}

trait Users {
    async fn user(&self, id: u64) -> String;
}

impl Users for Repo {
    #[cached(kind = "database_query", cache = self.cache, companions(traced))]
    async fn user(&self, id: u64) -> String {
        id.to_string()
    }
}

fn main() {}
