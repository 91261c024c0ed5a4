//! Freshness arguments: background mode on free functions and `&self` methods, every return
//! shape, borrowed, owned and `mut` arguments, `self` in the body and in `unless`, and `lock`.
use cache_core::{cached, Cache};
use std::time::Duration;

#[derive(Debug, Clone)]
enum AppError {
    Cache(cache_core::Error),
    NotFound,
}

impl From<cache_core::Error> for AppError {
    fn from(e: cache_core::Error) -> Self {
        AppError::Cache(e)
    }
}

#[derive(Clone)]
struct Repo {
    cache: Cache,
    limit: usize,
}

impl Repo {
    #[cached(kind = "database_query", refresh = 0.8, cache = self.cache)]
    async fn name(&self, id: u64) -> String {
        format!("{id}:{}", self.limit)
    }

    #[cached(kind = "database_query", xfetch, none_ttl = 30, cache = self.cache)]
    async fn find(&self, email: &str) -> Option<String> {
        (email.len() < self.limit).then(|| email.to_owned())
    }

    #[cached(
        kind = "database_query",
        soft_timeout = "150ms",
        hard_timeout = Duration::from_secs(2),
        unless = result.len() > self.limit,
        cache = self.cache
    )]
    async fn load(&self, path: &std::path::Path, mut tries: u32) -> Result<String, AppError> {
        tries += 1;
        if tries > 3 {
            return Err(AppError::NotFound);
        }
        Ok(path.display().to_string())
    }

    #[cached(kind = "database_query", xfetch = 2.0, cache_errors = 60, cache = self.cache)]
    async fn schema(&self, table: &str) -> Result<Vec<String>, String> {
        Ok(vec![table.to_owned()])
    }

    #[cached(kind = "api_response", lock, cache = self.cache)]
    async fn answer(&self, question: &str) -> String {
        question.to_owned()
    }

    #[cached(kind = "api_response", lock = false, cache = self.cache)]
    async fn unlocked(&self, question: &str) -> String {
        question.to_owned()
    }
}

#[cached(kind = "api_response", refresh = 0.5, soft_timeout = "1.5s")]
async fn free(words: &[String], n: usize) -> usize {
    words.len() + n
}

fn main() {
    let _ = (Repo::name, Repo::find, Repo::load, Repo::schema, Repo::answer, Repo::unlocked);
    let _ = free;
}
