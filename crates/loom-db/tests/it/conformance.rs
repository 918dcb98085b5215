//! The store conformance suite, through `GrpcStore` and the service, over PostgreSQL.

use std::sync::Arc;

use loom_db::{ClientConfig, GrpcStore};
use loom_store::Store;

use crate::support::{Guard, service};

async fn make() -> (Arc<dyn Store>, Guard) {
    let (guard, _) = service().await;
    let client = GrpcStore::connect(ClientConfig::new(guard.service.url())).expect("client");
    (Arc::new(client), guard)
}

loom_store::conformance_tests!(make);
