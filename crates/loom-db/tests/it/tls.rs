//! TLS and mutual TLS, with certificates made by the test: a CA, a server certificate for
//! 127.0.0.1 and a client certificate, all signed by the CA.

use std::sync::Arc;

use loom_db::{ClientConfig, ClientTls, GrpcStore, ServerConfig, ServerTls};
use loom_domain::{NewProject, ProjectId};
use loom_store::Store;
use loom_store::testing::TestDatabase;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::support::Service;

/// A CA and a server and a client certificate it signed, each as (certificate, key) PEM.
pub struct Pki {
    pub ca_pem: Vec<u8>,
    pub server: (Vec<u8>, Vec<u8>),
    pub client: (Vec<u8>, Vec<u8>),
}

pub fn pki(name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |sans: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(sans).unwrap().signed_by(&key, &ca).unwrap();
        (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
    };
    Pki {
        server: leaf(vec!["127.0.0.1".into(), "localhost".into()]),
        client: leaf(vec!["loom-control-plane".into()]),
        ca_pem: ca.pem().into_bytes(),
    }
}

async fn tls_service(pki: &Pki, mutual: bool) -> (Service, TestDatabase) {
    let db = TestDatabase::create().await;
    let store: Arc<dyn Store> = Arc::new(db.store().await);
    let tls = ServerTls::from_pem(pki.server.0.clone(), pki.server.1.clone(), mutual.then(|| pki.ca_pem.clone()));
    (Service::start(store, ServerConfig { tls: Some(tls), ..ServerConfig::default() }).await, db)
}

pub fn client(service: &Service, ca_pem: &[u8], identity: Option<(Vec<u8>, Vec<u8>)>) -> GrpcStore {
    let mut config = ClientConfig::new(format!("https://{}", service.addr));
    config.tls = Some(ClientTls { ca_pem: ca_pem.to_vec(), identity, domain: None });
    config.retry.max_attempts = 1;
    GrpcStore::connect(config).unwrap()
}

async fn create(store: &GrpcStore) -> loom_store::Result<()> {
    store.create_project(NewProject::new(ProjectId::parse("tls").unwrap(), "/tmp/repo")).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_clients_that_trust_its_ca_only() {
    let pki = pki("server");
    let (service, _db) = tls_service(&pki, false).await;
    create(&client(&service, &pki.ca_pem, None)).await.expect("a client trusting the CA is served");

    let stranger = self::pki("other");
    let err = create(&client(&service, &stranger.ca_pem, None)).await.unwrap_err();
    assert!(matches!(err, loom_store::Error::Unavailable(_)), "a client trusting another CA is refused: {err:?}");

    let plain = GrpcStore::connect(ClientConfig::new(format!("http://{}", service.addr))).unwrap();
    assert!(create(&plain).await.is_err(), "plaintext is refused");
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_certificate() {
    let pki = pki("mtls");
    let (service, _db) = tls_service(&pki, true).await;
    let with_cert = client(&service, &pki.ca_pem, Some(pki.client.clone()));
    create(&with_cert).await.expect("a client with a certificate from the CA is served");
    assert_eq!(with_cert.list_projects().await.unwrap().len(), 1);

    let without = client(&service, &pki.ca_pem, None);
    let err = without.list_projects().await.unwrap_err();
    assert!(matches!(err, loom_store::Error::Unavailable(_)), "a client without a certificate is refused: {err:?}");
    assert!(err.to_string().contains("connection"), "{err}");

    let foreign = self::pki("foreign");
    let wrong_ca = client(&service, &pki.ca_pem, Some(foreign.client.clone()));
    let err = wrong_ca.create_project(NewProject::new(ProjectId::parse("intruder").unwrap(), "/x")).await.unwrap_err();
    assert!(matches!(err, loom_store::Error::Unavailable(_)), "a certificate from another CA is refused: {err:?}");
    assert_eq!(with_cert.list_projects().await.unwrap().len(), 1, "the refused client changed nothing");
    service.stop().await;
}
