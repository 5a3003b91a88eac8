//! Certificates and the QUIC/TLS 1.3 server configuration.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    /// The chain, end-entity first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// A fresh self-signed certificate for `localhost` and the loopback addresses.
    pub fn self_signed() -> anyhow::Result<Identity> {
        let names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        let cert = rcgen::generate_simple_self_signed(names)
            .context("generating a self-signed certificate")?;
        Ok(Identity {
            chain: vec![cert.cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()).into(),
        })
    }

    /// Loads a PEM certificate chain and private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> anyhow::Result<Identity> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading certificate chain from {}", cert.display()))?;
        anyhow::ensure!(!chain.is_empty(), "no certificate in {}", cert.display());
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading private key from {}", key.display()))?;
        Ok(Identity { chain, key })
    }

    /// The SHA-256 fingerprint of the end-entity certificate, lowercase hex; clients pin it.
    pub fn fingerprint(&self) -> String {
        self.chain
            .first()
            .map(|c| fingerprint(c))
            .unwrap_or_default()
    }
}

/// Lowercase hex SHA-256 of a DER certificate.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    ring::digest::digest(&ring::digest::SHA256, cert.as_ref())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// ring's TLS 1.3 provider with AES-128-GCM/SHA-256 first. Every packet of every
/// connection is sealed with the suite's AEAD and the whole handshake key schedule
/// runs on its hash, so the choice is paid on every join and every media packet:
/// AES-128 takes 10 rounds to AES-256's 14, and SHA-256 HMACs replace SHA-384 ones.
/// (Media is end-to-end encrypted inside; this layer protects the transport.)
pub fn fast_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        _ => 2,
    });
    provider
}

/// A quinn server configuration: TLS 1.3 only, ALPN `orelay/1`, ring as the only
/// provider, and the server's cipher-suite order (AES-128-GCM first, see
/// [`fast_provider`]) over the client's.
pub fn server_config(
    identity: Identity,
    transport: quinn::TransportConfig,
) -> anyhow::Result<quinn::ServerConfig> {
    let provider = Arc::new(fast_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("configuring TLS 1.3")?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .context("certificate and key do not match")?;
    tls.alpn_protocols = vec![orelay_proto::ALPN.to_vec()];
    tls.max_early_data_size = 0;
    tls.ignore_client_order = true;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .context("building the QUIC TLS configuration")?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}
