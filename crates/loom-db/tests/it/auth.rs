//! Client authentication: with a token, every `loom.db.v1` call without it (or with another one)
//! is `UNAUTHENTICATED` — `CreateApiKey` included — and a listener outside loopback is refused
//! without TLS or without client authentication.

use std::sync::Arc;

use loom_db::{ClientConfig, GrpcStore, ServerConfig, Token};
use loom_domain::{NewProject, ProjectId};
use loom_store::Store;
use loom_store::testing::TestDatabase;
use prost::Message as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::Service;

const TOKEN: &str = "test-token-0123456789abcdef";

async fn token_service() -> (Service, TestDatabase) {
    let db = TestDatabase::create().await;
    let store: Arc<dyn Store> = Arc::new(db.store().await);
    let config = ServerConfig { token: Some(Token::new(TOKEN).unwrap()), ..ServerConfig::default() };
    (Service::start(store, config).await, db)
}

fn client(service: &Service, token: Option<&str>) -> GrpcStore {
    let mut config = ClientConfig::new(service.url());
    config.token = token.map(|t| Token::new(t).unwrap());
    config.retry.max_attempts = 1;
    GrpcStore::connect(config).unwrap()
}

/// Every method of `loom.db.v1.Database`, from the service's own descriptor.
fn methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(loom_proto::FILE_DESCRIPTOR_SET).unwrap();
    let service = set.file.iter().flat_map(|f| &f.service).find(|s| s.name() == "Database").unwrap();
    service.method.iter().map(|m| m.name().to_owned()).collect()
}

/// Calls `/loom.db.v1.Database/{method}` with an empty request and optional authorization value.
async fn raw_call(channel: Channel, method: &str, authorization: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    if let Some(value) = authorization {
        request.metadata_mut().insert("authorization", value.parse().unwrap());
    }
    let path = format!("/loom.db.v1.Database/{method}").parse().unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(request, path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_refuses_a_client_without_the_token() {
    let (service, _db) = token_service().await;
    let channel = Channel::from_shared(service.url()).unwrap().connect().await.unwrap();
    let methods = methods();
    assert!(methods.iter().any(|m| m == "CreateApiKey") && methods.len() > 20, "{methods:?}");
    for method in &methods {
        for auth in [None, Some("Bearer wrong-token-0123456789"), Some(TOKEN), Some("Basic dGVzdA==")] {
            let code = raw_call(channel.clone(), method, auth).await;
            assert_eq!(code, Code::Unauthenticated, "{method} with {auth:?}");
        }
        let code = raw_call(channel.clone(), method, Some(&format!("Bearer {TOKEN}"))).await;
        assert_ne!(code, Code::Unauthenticated, "{method} with the right token");
    }
    // Health stays open for probes.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
    assert_eq!(status.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_store_sends_its_token_and_a_wrong_one_changes_nothing() {
    let (service, _db) = token_service().await;
    let good = client(&service, Some(TOKEN));
    good.create_project(NewProject::new(ProjectId::parse("authed").unwrap(), "/tmp/repo")).await.unwrap();
    for bad in [client(&service, None), client(&service, Some("another-token-0123456789"))] {
        let err = bad.create_project(NewProject::new(ProjectId::parse("intruder").unwrap(), "/x")).await.unwrap_err();
        assert!(err.to_string().contains("Unauthenticated"), "{err}");
        let err = bad.list_projects().await.unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
    }
    let projects = good.list_projects().await.unwrap();
    assert_eq!(
        projects.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["authed"],
        "the refused clients changed nothing"
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_outside_loopback_needs_tls_and_client_authentication() {
    let db = TestDatabase::create().await;
    let store: Arc<dyn Store> = Arc::new(db.store().await);
    let serve = |config: ServerConfig| {
        let store = store.clone();
        async move {
            let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
            loom_db::serve(config, listener, store, CancellationToken::new()).await.unwrap_err().to_string()
        }
    };
    let err = serve(ServerConfig::default()).await;
    assert!(err.contains("refusing to serve on 0.0.0.0:") && err.contains("without TLS"), "{err}");
    assert!(err.contains("--tls-cert") && err.contains("--tls-key") && err.contains("--insecure-no-tls"), "{err}");
    let err = serve(ServerConfig { insecure_no_tls: true, ..ServerConfig::default() }).await;
    assert!(err.contains("without client authentication") && err.contains("--tls-client-ca"), "{err}");

    // Waived TLS with a token: served (a mesh encrypts), and the token is still required.
    let config =
        ServerConfig { insecure_no_tls: true, token: Some(Token::new(TOKEN).unwrap()), ..ServerConfig::default() };
    let service = Service::start_on("0.0.0.0:0".parse().unwrap(), store.clone(), config).await;
    let url = format!("http://127.0.0.1:{}", service.addr.port());
    let mut config = ClientConfig::new(url.clone());
    config.token = Some(Token::new(TOKEN).unwrap());
    GrpcStore::connect(config).unwrap().list_projects().await.expect("served with the token");
    let anonymous = GrpcStore::connect(ClientConfig::new(url)).unwrap();
    assert!(anonymous.list_projects().await.unwrap_err().to_string().contains("Unauthenticated"));
    service.stop().await;
}
