//! A `redis-server` that also listens with TLS, on a certificate signed by a private CA made for
//! the test (rcgen), so the client must be told to trust that CA.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

use crate::server::free_port;
use crate::RedisServer;

/// The server (plain port for the harness's own checks, TLS port for the cache) and its CA.
pub struct TlsRedis {
    /// The server; its plain port answers the harness.
    pub server: RedisServer,
    tls_port: u16,
    ca_pem: String,
    _certs: tempfile::TempDir,
}

impl TlsRedis {
    /// Makes a CA and a server certificate for `127.0.0.1`/`localhost`, and starts the server.
    pub fn start() -> Self {
        let certs = tempfile::tempdir().expect("temp dir");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tiered-cache test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "redis test server");
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("server certificate");
        let path = |name: &str| certs.path().join(name);
        std::fs::write(path("ca.pem"), ca.pem()).expect("write CA");
        std::fs::write(path("server.pem"), cert.pem()).expect("write cert");
        std::fs::write(path("server.key"), key.serialize_pem()).expect("write key");
        let tls_port = free_port();
        let arg = |name: &str| path(name).to_string_lossy().into_owned();
        let server = RedisServer::start_with(&[
            "--tls-port",
            &tls_port.to_string(),
            "--tls-cert-file",
            &arg("server.pem"),
            "--tls-key-file",
            &arg("server.key"),
            "--tls-ca-cert-file",
            &arg("ca.pem"),
            "--tls-auth-clients",
            "no",
        ]);
        TlsRedis {
            server,
            tls_port,
            ca_pem: ca.pem(),
            _certs: certs,
        }
    }

    /// `rediss://127.0.0.1:{tls port}`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}
