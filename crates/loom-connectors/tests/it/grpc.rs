//! The service over gRPC: every RPC through [`Client`], the bearer token, `WatchHealth`, a clear
//! error while the service is down and recovery when it is back.

use std::time::Duration;

use futures::StreamExt as _;
use loom_connectors::{Api, Error, Kind, Spec, Status};

use crate::support::{Behaviour, Endpoint, Fixture, TOKEN, client, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_over_grpc_with_the_token() {
    let f = Fixture::start().await;
    let served = serve(&f, "127.0.0.1:0".parse().unwrap()).await;
    let endpoint = Endpoint::start(Behaviour::Ok).await;

    let anonymous = client(served.addr, None);
    let refused = anonymous.list().await.unwrap_err();
    assert!(matches!(&refused, Error::Config(m) if m.contains("bearer token")), "{refused:?}");
    let wrong = client(served.addr, Some("not-the-token-0123456789")).list().await.unwrap_err();
    assert!(matches!(wrong, Error::Config(_)), "{wrong:?}");

    let c = client(served.addr, Some(TOKEN));
    let mut watch = c.watch(vec!["llm".into()]).await.unwrap();
    let mut spec = Spec::new("llm", Kind::LlmProvider, endpoint.url());
    spec.secrets.insert("api_key".into(), "sk-over-the-wire".into());
    spec.settings.insert("default_model".into(), "gpt-test".into());
    spec.check_interval = Duration::from_secs(3600);
    let created = c.register(spec.clone()).await.unwrap();
    assert_eq!((created.version, created.secret_names.clone()), (1, vec!["api_key".to_owned()]));
    let already = c.register(spec.clone()).await.unwrap_err();
    assert!(matches!(already, Error::AlreadyExists(ref id) if id == "llm"), "{already:?}");
    let h = c.check("llm").await.unwrap();
    assert_eq!((h.status, h.models.len()), (Status::Healthy, 2));
    let change = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((change.previous, change.health.status), (Status::Unknown, Status::Healthy));
    assert_eq!(c.check_all().await.unwrap().len(), 1);
    let resolved = c.resolve_llm("llm").await.unwrap();
    assert_eq!((resolved.api_key.as_deref(), resolved.default_model.as_str()), (Some("sk-over-the-wire"), "gpt-test"));

    spec.description = "renamed".into();
    spec.secrets.clear();
    let updated = c.update(1, spec.clone(), &[]).await.unwrap();
    assert_eq!((updated.version, updated.description.as_str()), (2, "renamed"));
    let stale = c.update(1, spec.clone(), &[]).await.unwrap_err();
    assert!(matches!(&stale, Error::Conflict(m) if m.contains("expected version 1, it is at 2")), "{stale:?}");
    let bad = c.register(Spec::new("Bad Id", Kind::Http, "http://x")).await.unwrap_err();
    assert!(matches!(&bad, Error::Invalid { field, .. } if field == "id"), "{bad:?}");
    let listed = c.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!format!("{listed:?}{:?}", c.get("llm").await.unwrap()).contains("sk-over-the-wire"));
    c.remove("llm").await.unwrap();
    assert!(matches!(c.get("llm").await, Err(Error::NotFound(_))));

    served.stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), served.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_service_is_a_clear_unavailable_error_until_it_returns() {
    let f = Fixture::start().await;
    let served = serve(&f, "127.0.0.1:0".parse().unwrap()).await;
    let addr = served.addr;
    let c = client(addr, Some(TOKEN));
    c.register(Spec::new("p", Kind::Prometheus, "http://127.0.0.1:9")).await.unwrap();
    served.stop.cancel();
    served.task.await.unwrap().unwrap();

    let down = c.get("p").await.unwrap_err();
    assert!(down.is_transient(), "{down:?}");
    assert!(down.to_string().contains(&addr.to_string()), "names the service: {down}");
    let write = c.remove("p").await.unwrap_err();
    assert!(write.is_transient(), "a write fails clearly too: {write:?}");

    // Back on the same address: the same client recovers by itself.
    let again = serve(&f, addr).await;
    let mut back = None;
    for _ in 0..50 {
        match c.get("p").await {
            Ok(p) => {
                back = Some(p);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(back.expect("the client recovers").id, "p");
    again.stop.cancel();
}
