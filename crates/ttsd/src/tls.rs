//! TLS for the public and admin listeners: certificate and key files (PEM) read at start and again on
//! every SIGHUP. New handshakes use whatever certificate was loaded last; connections already open keep
//! the one they started with. A reload that fails (a missing file, bad PEM, a key that does not match
//! the certificate) keeps the previous certificate, logs an error and counts the failure.
//!
//! Only the `ring` provider is built in (no aws-lc: it needs cmake and nasm to build).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::serve::listener::ListenerKind;

#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("cannot read the certificate file {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("the certificate file {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot read the private key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the key in {key} does not fit the certificate in {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A certificate chain file and its private key file, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// The one crypto provider ttsd uses.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in `path`, in order (leaf first).
pub(crate) fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let failed = |reason: String| TlsError::Certificate {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| failed(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads and checks both files: the key must parse and match the leaf certificate.
fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let certs = read_certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    let certified = CertifiedKey::from_der(certs, key, provider).map_err(|e| TlsError::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    })?;
    Ok(Arc::new(certified))
}

/// What the gateway trusts when it dials workers: `workers.tls_ca_file` (checked now), and the name to
/// expect in their certificates when it is not the host of their address.
pub(crate) fn worker_client_tls(
    config: &crate::config::WorkersConfig,
) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
    use anyhow::Context;
    let Some(ca_file) = &config.tls_ca_file else {
        return Ok(None);
    };
    read_certificates(ca_file).context("workers.tls_ca_file")?;
    let pem = std::fs::read(ca_file)
        .with_context(|| format!("cannot read workers.tls_ca_file {}", ca_file.display()))?;
    let mut tls =
        tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem));
    if let Some(name) = &config.tls_server_name {
        tls = tls.domain_name(name.clone());
    }
    Ok(Some(tls))
}

/// The worker's gRPC identity from `worker.tls_cert_file` and `worker.tls_key_file` (checked now: the key
/// must fit the certificate).
pub(crate) fn worker_server_tls(
    config: &crate::config::WorkerConfig,
) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
    use anyhow::Context;
    let Some(files) = config.grpc_tls() else {
        return Ok(None);
    };
    load(&files, &provider()).context("worker TLS")?;
    let cert = std::fs::read(&files.cert)
        .with_context(|| format!("cannot read worker.tls_cert_file {}", files.cert.display()))?;
    let key = std::fs::read(&files.key)
        .with_context(|| format!("cannot read worker.tls_key_file {}", files.key.display()))?;
    let identity = tonic::transport::Identity::from_pem(cert, key);
    Ok(Some(tonic::transport::ServerTlsConfig::new().identity(identity)))
}

/// The certificate a listener presents, swapped whole on reload.
#[derive(Debug)]
pub(crate) struct ReloadingCert {
    listener: ListenerKind,
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    /// Loads the files now; a problem here is an error at start, naming the file.
    pub(crate) fn load(listener: ListenerKind, files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let provider = provider();
        let current = load(&files, &provider)?;
        Ok(Arc::new(Self {
            listener,
            files,
            provider,
            current: RwLock::new(current),
        }))
    }

    /// Reads the files again; on success new handshakes use the new certificate, on failure the old one
    /// stays.
    fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.files, &self.provider)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    /// An acceptor whose handshakes ask this resolver for the certificate each time.
    pub(crate) fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        // HTTP/1.1 only: the WebSocket upgrade needs it, and the routers speak nothing else.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Outcome {
    success,
    failure,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    listener: ListenerKind,
    outcome: Outcome,
}

/// `tts_tls_reloads_total{listener, outcome}`.
#[derive(Clone, Default)]
pub(crate) struct TlsMetrics {
    reloads: Family<ReloadLabels, Counter>,
}

impl TlsMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "tts_tls_reloads",
            "Certificate reloads on SIGHUP, by listener and outcome (failure keeps the previous certificate)",
            metrics.reloads.clone(),
        );
        for listener in [ListenerKind::public, ListenerKind::admin] {
            for outcome in [Outcome::success, Outcome::failure] {
                let _ = metrics.reloads.get_or_create(&ReloadLabels { listener, outcome });
            }
        }
        metrics
    }

    fn reloaded(&self, listener: ListenerKind, outcome: Outcome) {
        self.reloads
            .get_or_create(&ReloadLabels { listener, outcome })
            .inc();
    }
}

/// Reloads every certificate on each SIGHUP until the process ends.
pub(crate) fn reload_on_sighup(certs: Vec<Arc<ReloadingCert>>, metrics: TlsMetrics) {
    use tokio::signal::unix::{SignalKind, signal};
    if certs.is_empty() {
        return;
    }
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => hangup,
        Err(error) => {
            tracing::error!(error = %error, "Cannot watch for SIGHUP; certificates will not be reloaded.");
            return;
        }
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            for cert in &certs {
                reload_one(cert, &metrics);
            }
        }
    });
}

fn reload_one(cert: &ReloadingCert, metrics: &TlsMetrics) {
    match cert.reload() {
        Ok(()) => {
            metrics.reloaded(cert.listener, Outcome::success);
            tracing::info!(
                listener = ?cert.listener,
                cert_file = %cert.files.cert.display(),
                "TLS certificate reloaded; new connections use it."
            );
        }
        Err(error) => {
            metrics.reloaded(cert.listener, Outcome::failure);
            tracing::error!(
                listener = ?cert.listener,
                error = %error,
                "TLS certificate reload failed; the previous certificate stays in use."
            );
        }
    }
}
