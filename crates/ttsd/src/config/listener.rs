//! The listener settings: TLS file pairs and the connection bounds, their validation and what the
//! accept loops and the TLS modules take from them.

use std::path::PathBuf;
use std::time::Duration;

use super::{Config, MAX_SECONDS, ServerConfig, WorkerConfig};
use crate::serve::listener::Limits;
use crate::tls::TlsFiles;

pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub(crate) const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 256;
pub(crate) const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// A certificate and key named by two fields: both or neither.
fn pair(
    problems: &mut Vec<String>,
    (cert_name, cert): (&str, &Option<PathBuf>),
    (key_name, key): (&str, &Option<PathBuf>),
) -> Option<TlsFiles> {
    match (cert, key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => None,
        (Some(_), None) => {
            problems.push(format!(
                "{cert_name} is set but {key_name} is not: set both or neither"
            ));
            None
        }
        (None, Some(_)) => {
            problems.push(format!(
                "{key_name} is set but {cert_name} is not: set both or neither"
            ));
            None
        }
    }
}

impl ServerConfig {
    /// The public listener's certificate and key, when it speaks TLS.
    pub(crate) fn public_tls(&self) -> Option<TlsFiles> {
        pair(
            &mut Vec::new(),
            ("server.tls_cert_file", &self.tls_cert_file),
            ("server.tls_key_file", &self.tls_key_file),
        )
    }

    /// The admin listener's certificate and key, when it speaks TLS.
    pub(crate) fn admin_tls(&self) -> Option<TlsFiles> {
        pair(
            &mut Vec::new(),
            ("server.admin_tls_cert_file", &self.admin_tls_cert_file),
            ("server.admin_tls_key_file", &self.admin_tls_key_file),
        )
    }

    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            max_pending_handshakes: self.max_pending_handshakes,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
        }
    }
}

impl WorkerConfig {
    /// The worker's gRPC certificate and key, when its port speaks TLS.
    pub(crate) fn grpc_tls(&self) -> Option<TlsFiles> {
        pair(
            &mut Vec::new(),
            ("worker.tls_cert_file", &self.tls_cert_file),
            ("worker.tls_key_file", &self.tls_key_file),
        )
    }
}

impl Config {
    pub(super) fn listener_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let server = &self.server;
        pair(
            &mut problems,
            ("server.tls_cert_file", &server.tls_cert_file),
            ("server.tls_key_file", &server.tls_key_file),
        );
        pair(
            &mut problems,
            ("server.admin_tls_cert_file", &server.admin_tls_cert_file),
            ("server.admin_tls_key_file", &server.admin_tls_key_file),
        );
        pair(
            &mut problems,
            ("worker.tls_cert_file", &self.worker.tls_cert_file),
            ("worker.tls_key_file", &self.worker.tls_key_file),
        );
        for (name, value) in [
            ("server.max_connections", server.max_connections),
            ("server.max_pending_handshakes", server.max_pending_handshakes),
        ] {
            if value == 0 {
                problems.push(format!("{name} must be greater than 0"));
            }
        }
        if server.handshake_timeout_ms == 0 || server.handshake_timeout_ms as f64 > MAX_SECONDS * 1000.0 {
            problems.push(format!(
                "server.handshake_timeout_ms must be greater than 0, at most {} (one year)",
                MAX_SECONDS * 1000.0
            ));
        }
        if let Some(name) = &self.workers.tls_server_name
            && name.trim().is_empty()
        {
            problems.push("workers.tls_server_name must not be empty when set".into());
        }
        if self.workers.tls_server_name.is_some() && self.workers.tls_ca_file.is_none() {
            problems.push("workers.tls_server_name needs workers.tls_ca_file".into());
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> anyhow::Result<Config> {
        Config::load(None, pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn a_half_pair_names_the_missing_file_and_every_problem_is_listed() {
        let err = load(&[
            ("TTSD_SERVER__TLS_CERT_FILE", "\"cert.pem\""),
            ("TTSD_SERVER__ADMIN_TLS_KEY_FILE", "\"admin.key\""),
            ("TTSD_WORKER__TLS_CERT_FILE", "\"worker.pem\""),
            ("TTSD_SERVER__MAX_CONNECTIONS", "0"),
            ("TTSD_SERVER__HANDSHAKE_TIMEOUT_MS", "0"),
        ])
        .unwrap_err();
        let text = format!("{err:#}");
        for expected in [
            "server.tls_cert_file is set but server.tls_key_file is not",
            "server.admin_tls_key_file is set but server.admin_tls_cert_file is not",
            "worker.tls_cert_file is set but worker.tls_key_file is not",
            "server.max_connections must be greater than 0",
            "server.handshake_timeout_ms must be greater than 0",
        ] {
            assert!(text.contains(expected), "{expected:?} in {text}");
        }
    }

    #[test]
    fn defaults_are_plain_and_generous() {
        let config = load(&[]).unwrap();
        assert_eq!(config.server.public_tls(), None);
        assert_eq!(config.server.admin_tls(), None);
        let limits = config.server.limits();
        assert_eq!(limits.max_connections, 4096);
        assert_eq!(limits.max_pending_handshakes, 256);
        assert_eq!(limits.handshake_timeout, Duration::from_secs(10));
        let config = load(&[
            ("TTSD_SERVER__TLS_CERT_FILE", "\"c.pem\""),
            ("TTSD_SERVER__TLS_KEY_FILE", "\"k.pem\""),
        ])
        .unwrap();
        assert_eq!(
            config.server.public_tls(),
            Some(TlsFiles {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
    }
}
