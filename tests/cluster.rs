//! The backend contracts (`harness/contract.rs`) against a real 3-master Redis Cluster on loopback.

cache_tests::contract_suite!(cache_tests::RedisCluster::start(), Cluster);
