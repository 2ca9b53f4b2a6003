//! Optional TLS with Ray's variables: `RAY_USE_TLS`, `RAY_TLS_SERVER_CERT`,
//! `RAY_TLS_SERVER_KEY`, `RAY_TLS_CA_CERT`. As in Ray it is mutual: every process
//! presents the same certificate as server and as client, and both sides verify the
//! other against the CA. The cluster token is still checked on top.

use std::path::PathBuf;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Turns TLS on.
pub const ENV_USE_TLS: &str = "RAY_USE_TLS";
/// The server's certificate chain (PEM).
pub const ENV_SERVER_CERT: &str = "RAY_TLS_SERVER_CERT";
/// The server's private key (PEM).
pub const ENV_SERVER_KEY: &str = "RAY_TLS_SERVER_KEY";
/// The CA that signed the server certificate (PEM).
pub const ENV_CA_CERT: &str = "RAY_TLS_CA_CERT";

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `RAY_USE_TLS` is neither on nor off.
    #[error("RAY_USE_TLS={0:?} is not valid; accepted values: 1, true, 0, false")]
    BadSwitch(String),
    /// A variable TLS needs is not set.
    #[error("RAY_USE_TLS is on but {0} is not set")]
    Missing(&'static str),
    /// The file named by a variable cannot be read.
    #[error("{var}={path:?}: cannot read the file: {error}")]
    Unreadable {
        /// The variable.
        var: &'static str,
        /// Its value.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not the PEM we need.
    #[error("{var}={path:?}: not a valid PEM {what}: {detail}")]
    Malformed {
        /// The variable.
        var: &'static str,
        /// Its value.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
        /// What the parser said.
        detail: String,
    },
}

/// Certificates and key read and checked at start-up.
#[derive(Clone)]
pub struct TlsSettings {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    ca_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsSettings { .. }")
    }
}

fn read_var_file(var: &'static str) -> Result<(PathBuf, Vec<u8>), TlsError> {
    let path = PathBuf::from(std::env::var_os(var).filter(|v| !v.is_empty()).ok_or(TlsError::Missing(var))?);
    let bytes = std::fs::read(&path).map_err(|error| TlsError::Unreadable { var, path: path.clone(), error })?;
    Ok((path, bytes))
}

fn check_certs(var: &'static str, path: PathBuf, pem: &[u8]) -> Result<(), TlsError> {
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(pem) {
        c.map_err(|e| TlsError::Malformed { var, path: path.clone(), what: "certificate", detail: e.to_string() })?;
        n += 1;
    }
    if n == 0 {
        return Err(TlsError::Malformed { var, path, what: "certificate", detail: "no CERTIFICATE block found".into() });
    }
    Ok(())
}

impl TlsSettings {
    /// Reads the variables. `Ok(None)` when TLS is off.
    pub fn from_env() -> Result<Option<Self>, TlsError> {
        let on = match std::env::var(ENV_USE_TLS) {
            Err(_) => false,
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "0" | "false" | "no" => false,
                "1" | "true" | "yes" => true,
                _ => return Err(TlsError::BadSwitch(v)),
            },
        };
        if !on {
            return Ok(None);
        }
        let (cert_path, cert_pem) = read_var_file(ENV_SERVER_CERT)?;
        check_certs(ENV_SERVER_CERT, cert_path, &cert_pem)?;
        let (key_path, key_pem) = read_var_file(ENV_SERVER_KEY)?;
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Malformed {
            var: ENV_SERVER_KEY,
            path: key_path,
            what: "private key",
            detail: e.to_string(),
        })?;
        let (ca_path, ca_pem) = read_var_file(ENV_CA_CERT)?;
        check_certs(ENV_CA_CERT, ca_path, &ca_pem)?;
        Ok(Some(Self { cert_pem, key_pem, ca_pem }))
    }

    /// What a server presents, and the CA its clients' certificates must chain to.
    pub fn server_config(&self) -> ServerTlsConfig {
        use_ring();
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    /// What a client trusts, and the certificate it presents.
    pub fn client_config(&self, host: &str) -> ClientTlsConfig {
        use_ring();
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(host)
    }

    /// The variables a child process needs (paths only; never key material).
    pub fn child_env() -> Vec<(&'static str, String)> {
        [ENV_USE_TLS, ENV_SERVER_CERT, ENV_SERVER_KEY, ENV_CA_CERT]
            .iter()
            .filter_map(|v| std::env::var(v).ok().map(|val| (*v, val)))
            .collect()
    }
}

/// Makes ring the process's rustls crypto provider. rustls picks one by itself
/// only when a single provider is compiled in; a binary that also links the AWS
/// SDK (whose HTTPS client brings aws-lc-rs) has two, and rustls would panic at the
/// first TLS config. The cluster's TLS is tonic's ring-based one.
pub fn use_ring() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err: another provider was installed first, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
