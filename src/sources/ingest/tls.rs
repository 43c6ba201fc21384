//! `tls: {cert, key}`: the endpoint speaks HTTPS (rustls).
//!
//! The files are read when the source is built, so `validate` and a reload
//! refuse a certificate or key that does not load. A renewed certificate is
//! taken by a restart, or by a reload when the config changed.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::config::{BuildError, Spanned};

/// `tls:` on `ingest`.
#[derive(Clone, Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file with the server's certificate, followed by the
    /// intermediate certificates if any. Required.
    pub cert: Spanned<PathBuf>,
    /// A PEM file with the certificate's private key (PKCS #8, PKCS #1 or
    /// SEC1). Required.
    pub key: Spanned<PathBuf>,
}

impl TlsConfig {
    /// Reads the files and makes the acceptor; HTTP/2 and HTTP/1.1 are
    /// offered by ALPN.
    pub fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, BuildError> {
        let read = |file: &Spanned<PathBuf>| {
            std::fs::read(&file.value)
                .map_err(|e| BuildError::at(file.pos, format!("cannot read {}: {e}", file.value.display())))
        };
        let pem = read(&self.cert)?;
        let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| {
            BuildError::at(
                self.cert.pos,
                format!("{}: not a PEM certificate file: {e}", self.cert.value.display()),
            )
        })?;
        if certs.is_empty() {
            let msg = format!("{} holds no certificate", self.cert.value.display());
            return Err(BuildError::at(self.cert.pos, msg));
        }
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key)?).map_err(|e| {
            BuildError::at(self.key.pos, format!("{}: no private key in it: {e}", self.key.value.display()))
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BuildError::new(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                let msg = format!(
                    "{} and {} do not make a usable certificate and key: {e}",
                    self.cert.value.display(),
                    self.key.value.display()
                );
                BuildError::at(self.key.pos, msg)
            })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}
