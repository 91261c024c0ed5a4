use cache_core::cached;

#[cached(kind = "heavy_computation")]
async fn double<T: Clone>(x: T) -> (T, T) {
    (x.clone(), x)
}

fn main() {}
