//! The backend contracts (`harness/contract.rs`) against a real 3-master Redis Cluster on loopback.

use cache_tests::contract::{self, Backend};
use cache_tests::RedisCluster;

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let backend = RedisCluster::start();
                contract::$name(Backend::Cluster(&backend)).await;
            }
        )*
    };
}

contract_tests!(
    read_through_is_shared_between_instances,
    concurrent_misses_run_one_loader,
    the_distributed_lock_runs_one_loader_across_instances,
    an_invalidation_fences_off_a_load_in_flight_elsewhere,
    tags_invalidate_everywhere_in_constant_commands,
    the_backplane_reaches_other_instances,
    clears_cover_every_node_within_kind_and_prefix,
    prefixes_are_isolated,
    warming_pipelines_entries_to_every_node,
);
