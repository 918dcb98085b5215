//! `loom certs dev`: a local CA and the certificates and keys a development deployment needs —
//! a server certificate (for `localhost` and `127.0.0.1`: the database service, NATS), a client
//! certificate (mutual TLS), the task-signing key pair, and a database service token. Private
//! keys are written with mode 0600; nothing is overwritten without `--force`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a development CA, server and client certificates, task keys and a service token.
    Dev(DevArgs),
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Directory to write into (created if missing).
    #[arg(long, default_value = "certs")]
    out: PathBuf,
    /// Replace files that exist.
    #[arg(long)]
    force: bool,
}

/// The files `loom certs dev` writes, and whether each is secret.
pub const FILES: [(&str, bool); 10] = [
    ("ca.pem", false),
    ("ca-key.pem", true),
    ("server.pem", false),
    ("server-key.pem", true),
    ("client.pem", false),
    ("client-key.pem", true),
    ("task-signing.pem", true),
    ("task-verify.pem", false),
    ("db.token", true),
    ("README.txt", false),
];

pub fn run(cmd: CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Dev(args) => dev(&crate::paths::absolute(&args.out)?, args.force),
    }
}

fn dev(out: &Path, force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    if !force && let Some((name, _)) = FILES.iter().find(|(name, _)| out.join(name).exists()) {
        anyhow::bail!("{} exists: pass --force to replace the files in {}", out.join(name).display(), out.display());
    }
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Loom development CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    let leaf = |name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| -> anyhow::Result<(String, String)> {
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let sans = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let server = leaf("localhost", sans, ExtendedKeyUsagePurpose::ServerAuth)?;
    let client = leaf("loom-client", vec!["loom-client".to_owned()], ExtendedKeyUsagePurpose::ClientAuth)?;
    let (signing_pem, signing) = loom_bus::SigningKey::generate_pem();
    let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let contents = [
        ca.pem(),
        ca.key().serialize_pem(),
        server.0,
        server.1,
        client.0,
        client.1,
        signing_pem,
        signing.verify_key().to_pem(),
        format!("{token}\n"),
        readme(out),
    ];
    for ((name, secret), text) in FILES.iter().zip(contents) {
        let path = out.join(name);
        if *secret { write_private(&path, text.as_bytes())? } else { write_public(&path, text.as_bytes())? }
    }
    println!("loom: wrote a development CA, certificates and keys to {}", out.display());
    println!("loom: task-signing key {} (see {})", signing.id(), out.join("README.txt").display());
    Ok(())
}

fn readme(out: &Path) -> String {
    let d = out.display();
    format!(
        "Development certificates and keys made by `loom certs dev` (never use them in production).\n\n\
         Database service with mutual TLS and a token:\n  \
         LOOM_DATABASE__SERVICE_TOKEN_FILE={d}/db.token loom serve db --listen 0.0.0.0:50051 \\\n    \
         --tls-cert {d}/server.pem --tls-key {d}/server-key.pem --tls-client-ca {d}/ca.pem\n\
         Its clients (loom.toml):\n  [database]\n  service_url = \"https://localhost:50051\"\n  \
         service_ca = \"{d}/ca.pem\"\n  service_cert = \"{d}/client.pem\"\n  service_key = \"{d}/client-key.pem\"\n  \
         service_token_file = \"{d}/db.token\"\n\n\
         Task signatures: the control plane gets LOOM_BUS__TASK_SIGNING_KEY={d}/task-signing.pem,\n\
         agents get LOOM_BUS__TASK_VERIFY_KEY={d}/task-verify.pem.\n\n\
         NATS over TLS: tls_ca = \"{d}/ca.pem\" in [bus]; the server uses server.pem and server-key.pem.\n"
    )
}

/// Writes a secret file with mode 0600 (replacing one that exists).
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    write(path, contents, 0o600)
}

fn write_public(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    write(path, contents, 0o644)
}

fn write(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn dev_writes_a_usable_set_with_private_keys_unreadable_to_others() {
        let dir = tempfile::tempdir().unwrap();
        dev(dir.path(), false).unwrap();
        for (name, secret) in FILES {
            let mode = std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, if secret { 0o600 } else { 0o644 }, "{name}");
        }
        let signing = loom_bus::SigningKey::from_file(&dir.path().join("task-signing.pem")).unwrap();
        let verify = loom_bus::VerifyKey::from_file(&dir.path().join("task-verify.pem")).unwrap();
        assert_eq!(signing.verify_key(), verify);
        loom_db::Token::from_file(&dir.path().join("db.token")).unwrap();
        let tls = loom_db::ServerTls::from_files(
            &dir.path().join("server.pem"),
            &dir.path().join("server-key.pem"),
            Some(&dir.path().join("ca.pem")),
        );
        assert!(tls.is_ok());
        let err = dev(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("exists: pass --force"), "{err}");
        dev(dir.path(), true).unwrap();
        assert_ne!(loom_bus::VerifyKey::from_file(&dir.path().join("task-verify.pem")).unwrap(), verify, "replaced");
    }

    /// The written set is what `README.txt` says: the database service on 0.0.0.0 with the
    /// server certificate, the client CA and the token serves a client with the client
    /// certificate and the token at `https://localhost`, and refuses one without the certificate.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_database_service_runs_on_the_dev_certificates() {
        use loom_db::{ClientConfig, ClientTls, GrpcStore, ServerConfig, ServerTls, Token};
        use loom_store::Store as _;
        let dir = tempfile::tempdir().unwrap();
        dev(dir.path(), false).unwrap();
        let f = |name: &str| dir.path().join(name);
        let tls = ServerTls::from_files(&f("server.pem"), &f("server-key.pem"), Some(&f("ca.pem"))).unwrap();
        let token = Token::from_file(&f("db.token")).unwrap();
        let config = ServerConfig { tls: Some(tls), token: Some(token.clone()), ..ServerConfig::default() };
        let store = std::sync::Arc::new(loom_store::SqliteStore::in_memory().await.unwrap());
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let served = tokio::spawn(loom_db::serve(config, listener, store, shutdown.clone()));
        let client = |identity: bool| {
            let pair = (f("client.pem"), f("client-key.pem"));
            let tls = ClientTls::from_files(&f("ca.pem"), identity.then_some((pair.0.as_path(), pair.1.as_path())));
            let mut config = ClientConfig::new(format!("https://localhost:{port}"));
            (config.tls, config.token) = (Some(tls.unwrap()), Some(token.clone()));
            config.retry.max_attempts = 1;
            GrpcStore::connect(config).unwrap()
        };
        client(true).list_projects().await.expect("served over mutual TLS with the token");
        assert!(client(false).list_projects().await.is_err(), "a client without the certificate is refused");
        shutdown.cancel();
        served.await.unwrap().unwrap();
    }
}
