//! The service as any gRPC client sees it: requests are validated at the edge, and health and
//! reflection answer.

use loom_proto::v1::{self, database_client::DatabaseClient};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, server_reflection_client::ServerReflectionClient};

use crate::support::service;

async fn channel(url: String) -> Channel {
    Channel::from_shared(url).unwrap().connect().await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_invalid_arguments_with_clear_messages() {
    let (guard, _) = service().await;
    let mut db = DatabaseClient::new(channel(guard.service.url()).await);

    let err = db.get_bead(v1::GetBeadRequest { id: "Not A Bead".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("invalid bead id: \"Not A Bead\""), "{}", err.message());

    let bead = v1::NewBead { project_id: "p".into(), title: "t".into(), r#type: 1, priority: 9, ..Default::default() };
    let err = db.create_beads(v1::CreateBeadsRequest { beads: vec![bead] }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("invalid priority: 9 is out of range"), "{}", err.message());

    let filter = v1::BeadFilter { status: Some(0), ..Default::default() };
    let page = v1::PageRequest { after: None, limit: 10 };
    let err = db.list_beads(v1::ListBeadsRequest { filter: Some(filter), page: Some(page) }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "invalid status: is unspecified: use one of open, in_progress, blocked, closed");

    let err = db.claim_ready(v1::ClaimReadyRequest { project_id: "p".into(), max: 1, ..Default::default() }).await;
    assert_eq!(err.unwrap_err().message(), "invalid now: is required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer() {
    let (guard, _) = service().await;
    let channel = channel(guard.service.url()).await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", loom_proto::SERVICE_NAME] {
        let status = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(status.status(), ServingStatus::Serving, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection.server_reflection_info(futures::stream::iter([request])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else { panic!("{answer:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == loom_proto::SERVICE_NAME), "{names:?}");
    assert!(names.iter().any(|n| n == "grpc.health.v1.Health"), "{names:?}");
}
