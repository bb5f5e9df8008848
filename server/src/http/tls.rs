//! TLS for the one listening port. tonic's own TLS offers only `h2` in ALPN, which a client
//! that speaks HTTP/1.1 alone (curl --http1.1, most scrapers) cannot agree to: the handshake
//! fails. Here the handshake offers both `h2` and `http/1.1`, and the connection is then
//! served by the same hyper builder that tells HTTP/2 from HTTP/1.1 by its first bytes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;

/// A handshake that takes longer than this is dropped: a client that connects and says
/// nothing must not hold a task and a socket forever.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read tls_cert {path}: {source}")]
    ReadCert {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read tls_key {path}: {source}")]
    ReadKey {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid tls_cert {path}: {reason}")]
    BadCert { path: String, reason: String },
    #[error("invalid tls_key {path}: {reason}")]
    BadKey { path: String, reason: String },
    #[error("the TLS certificate and key do not go together: {0}")]
    Config(tokio_rustls::rustls::Error),
}

/// The acceptor for a PEM certificate chain and key, offering `h2` then `http/1.1`.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|source| TlsError::ReadCert {
        path: cert.display().to_string(),
        source,
    })?;
    let key_pem = std::fs::read(key).map_err(|source| TlsError::ReadKey {
        path: key.display().to_string(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::BadCert {
            path: cert.display().to_string(),
            reason: err.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::BadCert {
            path: cert.display().to_string(),
            reason: "no certificate in it".to_owned(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| TlsError::BadKey {
        path: key.display().to_string(),
        reason: err.to_string(),
    })?;
    // Explicit provider: the binary links more than one (reqwest brings its own), and the
    // process-wide default is then ambiguous.
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The TLS connections of `incoming`, each handshake run on its own task so a slow client
/// delays nobody else. Ends when the returned stream is dropped (the server stopped).
pub fn incoming(
    mut incoming: TcpIncoming,
    acceptor: TlsAcceptor,
) -> impl Stream<Item = Result<TlsStream<TcpStream>, std::io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut handshakes = JoinSet::new();
        loop {
            tokio::select! {
                // The server dropped the stream: stop accepting (this closes the socket).
                () = tx.closed() => break,
                Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
                accepted = incoming.next() => {
                    let tcp = match accepted {
                        Some(Ok(tcp)) => tcp,
                        Some(Err(err)) => {
                            tracing::debug!(error = %err, "accept failed");
                            continue;
                        }
                        None => break,
                    };
                    let (acceptor, tx) = (acceptor.clone(), tx.clone());
                    handshakes.spawn(async move {
                        let peer = tcp.peer_addr().ok();
                        match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => {
                                let _ = tx.send(Ok(tls)).await;
                            }
                            Ok(Err(err)) => {
                                tracing::debug!(?peer, error = %err, "TLS handshake failed")
                            }
                            Err(_) => tracing::debug!(?peer, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}
