//! The backend contracts (`harness/contract.rs`) against a single redis-server.

cache_tests::contract_suite!(cache_tests::RedisServer::start(), Single);
