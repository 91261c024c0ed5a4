//! Methods taking `&self` (also `self: &Self`, lifetimes, trait impls), `cache = self.cache`,
//! `cache = &self.cache`, `cache = self.cache.clone()`; the futures are `Send`.

use cache_core::{cached, Cache};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Repo {
    cache: Cache,
    table: String,
    calls: AtomicUsize,
}

impl Repo {
    #[cached(kind = "database_query", cache = self.cache)]
    async fn row(&self, id: u32) -> Option<String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Some(format!("{}:{id}", self.table))
    }

    #[cached(kind = "database_query", key = "count:{min}", cache = &self.cache)]
    pub async fn count(self: &Self, min: u32) -> Result<u64, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if min > 100 {
            return Err("too large".into());
        }
        Ok(u64::from(min) * 10)
    }

    #[cached(kind = "api_response", cache = self.cache.clone())]
    async fn echo<'a>(&'a self, text: &'a str) -> String {
        self.calls.fetch_add(1, Ordering::SeqCst);
        text.to_owned()
    }

    /// Same name and argument as `Other::row`: the default keys differ.
    #[cached(kind = "database_query", cache = self.cache)]
    async fn same(&self, id: u32) -> u32 {
        self.calls.fetch_add(1, Ordering::SeqCst);
        id
    }
}

struct Other {
    cache: Cache,
}

impl Other {
    #[cached(kind = "database_query", cache = self.cache)]
    async fn same(&self, id: u32) -> u32 {
        id + 1000
    }
}

trait Source {
    async fn fetch(&self, id: u32) -> String;
}

impl Source for Repo {
    #[cached(kind = "api_response", cache = self.cache)]
    async fn fetch(&self, id: u32) -> String {
        format!("fetched {id}")
    }
}

fn assert_send<T: Send>(t: T) -> T {
    t
}

#[tokio::main]
async fn main() {
    let cache = Cache::builder().prefix("ui").build().await.unwrap();
    let repo = Repo {
        cache: cache.clone(),
        table: "t".into(),
        calls: AtomicUsize::new(0),
    };
    for _ in 0..2 {
        assert_eq!(assert_send(repo.row(1)).await.as_deref(), Some("t:1"));
        assert_eq!(assert_send(repo.count(2)).await, Ok(20));
        assert_eq!(repo.count(200).await, Err("too large".to_string()));
        assert_eq!(repo.echo("hi").await, "hi");
        assert_eq!(repo.same(5).await, 5);
    }
    assert_eq!(repo.calls.load(Ordering::SeqCst), 6);
    assert_eq!(Other { cache }.same(5).await, 1005);
    assert_eq!(repo.fetch(3).await, "fetched 3");

    let handle = tokio::spawn(async move { repo.row(2).await });
    assert_eq!(handle.await.unwrap().as_deref(), Some("t:2"));
}
