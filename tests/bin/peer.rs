//! A second OS process for cross-process tests: a `Cache` driven by line commands on stdin.
//!
//! ```text
//! peer REDIS_URL PREFIX
//! get KEY        -> "value V" | "none"
//! set KEY V      -> "ok"
//! inval KEY      -> "ok"
//! tag TAG        -> "ok"
//! ```
//! Values are strings of kind `api_response`.

use cache_core::{Cache, Kind};
use std::io::{BufRead, Write};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(prefix)) = (args.next(), args.next()) else {
        eprintln!("usage: peer REDIS_URL PREFIX");
        std::process::exit(2);
    };
    let cache = match Cache::builder().redis_url(url).prefix(prefix).build().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("peer: {e}");
            std::process::exit(1);
        }
    };
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    println!("ready");
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let mut parts = line.splitn(3, ' ');
        let reply = match (parts.next(), parts.next(), parts.next()) {
            (Some("get"), Some(k), None) => {
                match cache.get::<String>(Kind::API_RESPONSE, k).await {
                    Some(v) => format!("value {v}"),
                    None => "none".to_string(),
                }
            }
            (Some("set"), Some(k), Some(v)) => {
                cache.set(Kind::API_RESPONSE, k, v.to_string()).await;
                "ok".into()
            }
            (Some("inval"), Some(k), None) => {
                cache.invalidate(Kind::API_RESPONSE, k).await;
                "ok".into()
            }
            (Some("tag"), Some(t), None) => {
                cache.invalidate_tag(t).await;
                "ok".into()
            }
            _ => format!("error: bad command {line:?}"),
        };
        if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
}
