//! `RemoteJwks` over https (feature `rustls`), against a TLS JWKS server on
//! 127.0.0.1 with a self-signed certificate made for the test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;
use tower_jwt_signer::{
    Algorithm, FetchError, JWKS_PATH, JwksService, KeyRegistry, RemoteJwks, SigningKey, Verifier,
    VerifyError,
};

use crate::support::jose::compact;
use crate::support::verifier::claims;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

struct TlsServer {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    certificate: CertificateDer<'static>,
    task: JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_jwks_server(registry: KeyRegistry) -> TlsServer {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let certificate = CertificateDer::from(certified.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let service = JwksService::new(registry);
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, service, counter) = (acceptor.clone(), service.clone(), counter.clone());
            connections.spawn(async move {
                // A client that refuses the certificate ends the handshake.
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let handler = hyper::service::service_fn(move |request: http::Request<_>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let service = service.clone();
                    async move {
                        let (parts, _) = request.into_parts();
                        let response = service
                            .oneshot(http::Request::from_parts(parts, ()))
                            .await
                            .unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), handler)
                    .await;
            });
            while connections.try_join_next().is_some() {}
        }
    });
    TlsServer {
        addr,
        hits,
        certificate,
        task,
    }
}

#[tokio::test]
async fn https_jwks_with_a_trusted_certificate() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let server = tls_jwks_server(KeyRegistry::new(key.clone())).await;
    let url = format!("https://{}{JWKS_PATH}", server.addr);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.certificate.clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let remote = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let remote = RemoteJwks::builder(&url).tls_config(tls).build().unwrap();
        remote.prefetch().await.unwrap();
        remote
    })
    .await
    .expect("fetched in time");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    let claims = Verifier::new(remote)
        .verify(&compact(&key, &claims()))
        .await
        .unwrap();
    assert_eq!(claims.subject(), Some("alice"));
}

#[tokio::test]
async fn https_jwks_with_an_untrusted_certificate_is_refused() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let server = tls_jwks_server(KeyRegistry::new(key.clone())).await;
    // The default trust store (Mozilla's roots) does not know the test
    // certificate: no key is ever fetched from that server.
    let remote = RemoteJwks::new(format!("https://{}{JWKS_PATH}", server.addr)).unwrap();
    let err = tokio::time::timeout(std::time::Duration::from_secs(10), remote.prefetch())
        .await
        .expect("answered in time")
        .unwrap_err();
    assert!(
        matches!(&err, FetchError::Http(text) if text.contains("certificate")),
        "{err}"
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 0);
    let err = Verifier::new(remote)
        .verify(&compact(&key, &claims()))
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::KeysUnavailable(_)), "{err}");
}
