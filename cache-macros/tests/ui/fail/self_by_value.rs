use cache_core::cached;

struct Repo;

impl Repo {
    #[cached(kind = "database_query")]
    async fn user(self, id: u64) -> String {
        id.to_string()
    }
}

fn main() {}
