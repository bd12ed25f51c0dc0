//! Certificates and QUIC endpoints with mutual TLS.
//!
//! Every agent (manager and host) holds a certificate issued by the cluster's CA and trusts only that CA,
//! in both directions: a peer that cannot show a certificate from the cluster CA cannot send or receive a
//! chunk. `cascade certs ca` and `cascade certs issue` make them with rcgen; production may use any CA.

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The name every agent certificate carries and every client expects: agents are addressed by IP, and the
/// CA (not the name) is what is trusted.
pub const AGENT_SERVER_NAME: &str = "cascade-agent";

/// ALPN protocol id of the agents' protocol, with its wire version: agents of different versions fail the
/// QUIC handshake ("no application protocol") instead of exchanging frames neither can decode. Version 2:
/// frames in variable-length integers (`protocol::codec`).
const ALPN: &[u8] = b"cascade-agent/2";

/// Why TLS material could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The PEM or the certificate is not usable.
    #[error("{0}")]
    Invalid(String),
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "Cascade cluster CA");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn write(path: &Path, content: &str) -> Result<(), TlsError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| TlsError::Io { path: dir.display().to_string(), source })?;
    }
    std::fs::write(path, content).map_err(|source| TlsError::Io { path: path.display().to_string(), source })
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|source| TlsError::Io { path: path.display().to_string(), source })
}

/// Creates a CA in `dir` (`ca.pem`, `ca.key`). Refuses to overwrite an existing CA.
pub fn create_ca(dir: &Path) -> Result<(), TlsError> {
    if dir.join("ca.key").exists() {
        return Err(TlsError::Invalid(format!("{} already holds a CA; remove it first", dir.display())));
    }
    let key = KeyPair::generate().map_err(|e| TlsError::Invalid(e.to_string()))?;
    let cert = ca_params().self_signed(&key).map_err(|e| TlsError::Invalid(e.to_string()))?;
    write(&dir.join("ca.pem"), &cert.pem())?;
    write(&dir.join("ca.key"), &key.serialize_pem())
}

/// Issues `<name>.pem` and `<name>.key` in `out`, signed by the CA in `ca_dir`, valid for both ends of a
/// mutual-TLS connection.
pub fn issue(ca_dir: &Path, name: &str, out: &Path) -> Result<(), TlsError> {
    let invalid = |e: rcgen::Error| TlsError::Invalid(e.to_string());
    let ca_key = KeyPair::from_pem(&read(&ca_dir.join("ca.key"))?).map_err(invalid)?;
    // The same parameters and key reproduce the CA's issuer identity (name and key identifier).
    let ca = ca_params().self_signed(&ca_key).map_err(invalid)?;
    let mut params = CertificateParams::new(vec![AGENT_SERVER_NAME.to_string()]).map_err(invalid)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().map_err(invalid)?;
    let cert = params.signed_by(&key, &ca, &ca_key).map_err(invalid)?;
    write(&out.join(format!("{name}.pem")), &cert.pem())?;
    write(&out.join(format!("{name}.key")), &key.serialize_pem())
}

/// Paths of an agent's TLS material.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA certificate.
    pub ca: std::path::PathBuf,
    /// This agent's certificate.
    pub cert: std::path::PathBuf,
    /// This agent's private key.
    pub key: std::path::PathBuf,
}

/// Transport tuning for bulk transfer: the defaults (1.25 MB stream window) cap one stream far below a
/// 10 Gbit/s link's bandwidth-delay product.
fn transport() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window((64u32 * 1024 * 1024).into())
        .receive_window((256u32 * 1024 * 1024).into())
        .send_window(256 * 1024 * 1024)
        .max_concurrent_bidi_streams(256u32.into())
        .keep_alive_interval(Some(Duration::from_secs(2)))
        .max_idle_timeout(Some(Duration::from_secs(10).try_into().expect("10 s is a valid idle timeout")))
        .mtu_discovery_config(Some(mtu_discovery()));
    Arc::new(transport)
}

/// MTU discovery may probe up to the largest UDP payload an IPv4 path of 1500-byte frames carries; quinn's
/// default stops 20 bytes short (it assumes IPv6 headers). A probe the path cannot carry is simply lost.
fn mtu_discovery() -> quinn::MtuDiscoveryConfig {
    let mut config = quinn::MtuDiscoveryConfig::default();
    config.upper_bound(1472);
    config
}

/// Length of this endpoint's connection IDs: every QUIC packet sent to it carries one. An agent holds at
/// most a few thousand connections, so 4 random bytes keep them distinct (quinn redraws a collision)
/// and save 4 bytes in every packet against the default 8.
const CONNECTION_ID_BYTES: usize = 4;

fn endpoint_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    config.cid_generator(|| Box::new(quinn_proto::RandomConnectionIdGenerator::new(CONNECTION_ID_BYTES)));
    config
}

/// UDP socket buffers asked for, each way. The kernel's default (`net.core.rmem_default`, ~208 KiB) holds
/// about 150 datagrams: a burst from a fast sender, or a receiver busy verifying a chunk for a moment,
/// overflows it, and every dropped datagram costs QUIC a loss recovery and a congestion-window cut. The
/// kernel caps the request at `net.core.rmem_max` / `wmem_max` (4 MiB on the development VM).
const SOCKET_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// Binds the endpoint's UDP socket with buffers raised for bulk transfer (best effort: a smaller buffer
/// than asked is still a working socket).
fn bulk_socket(bind: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(bind)?;
    let state = quinn::udp::UdpSocketState::new((&socket).into())?;
    if let Err(e) = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER_BYTES) {
        tracing::warn!(%bind, "cannot raise the UDP receive buffer: {e}");
    }
    if let Err(e) = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER_BYTES) {
        tracing::warn!(%bind, "cannot raise the UDP send buffer: {e}");
    }
    tracing::debug!(
        %bind,
        recv = state.recv_buffer_size((&socket).into()).unwrap_or(0),
        send = state.send_buffer_size((&socket).into()).unwrap_or(0),
        "UDP socket buffers"
    );
    Ok(socket)
}

/// A QUIC endpoint that accepts and makes mutual-TLS connections with the cluster CA.
pub fn endpoint(files: &TlsFiles, bind: SocketAddr) -> Result<quinn::Endpoint, TlsError> {
    endpoint_speaking(files, bind, ALPN)
}

/// [`endpoint`] for the protocol version `alpn` (another version only in tests).
fn endpoint_speaking(files: &TlsFiles, bind: SocketAddr, alpn: &[u8]) -> Result<quinn::Endpoint, TlsError> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| TlsError::Invalid(format!("{what}: {e}"));
    let ca = CertificateDer::from_pem_file(&files.ca).map_err(|e| invalid(&files.ca.display().to_string(), &e))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| invalid(&files.cert.display().to_string(), &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(&files.cert.display().to_string(), &e))?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| invalid(&files.key.display().to_string(), &e))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|e| invalid("CA certificate", &e))?;
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| invalid("client verifier", &e))?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| invalid("TLS versions", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| invalid("server certificate", &e))?;
    server.alpn_protocols = vec![alpn.to_vec()];
    let server = QuicServerConfig::try_from(server).map_err(|e| invalid("QUIC server", &e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    server.transport_config(transport());

    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| invalid("TLS versions", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| invalid("client certificate", &e))?;
    client.alpn_protocols = vec![alpn.to_vec()];
    let client = QuicClientConfig::try_from(client).map_err(|e| invalid("QUIC client", &e))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    client.transport_config(transport());

    let io = |source| TlsError::Io { path: format!("UDP {bind}"), source };
    let socket = bulk_socket(bind).map_err(io)?;
    let mut endpoint =
        quinn::Endpoint::new(endpoint_config(), Some(server), socket, Arc::new(quinn::TokioRuntime)).map_err(io)?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, name: &str) -> TlsFiles {
        issue(dir, name, dir).expect("issue");
        TlsFiles { ca: dir.join("ca.pem"), cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) }
    }

    /// Connects `client` to `server`; the server side accepts in the background.
    async fn connect(client: &quinn::Endpoint, server: &quinn::Endpoint) -> Result<(), String> {
        let addr = server.local_addr().map_err(|e| e.to_string())?;
        let accepting = server.clone();
        let accepted = tokio::spawn(async move {
            let incoming = accepting.accept().await?;
            incoming.await.ok().map(|_connection| ())
        });
        let outcome = match client.connect(addr, AGENT_SERVER_NAME) {
            Ok(connecting) => match tokio::time::timeout(Duration::from_secs(10), connecting).await {
                Ok(Ok(_connection)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("handshake timed out".to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        accepted.abort();
        outcome
    }

    #[tokio::test]
    async fn agents_of_another_wire_version_fail_the_handshake() {
        let dir = tempfile::tempdir().expect("temp dir");
        create_ca(dir.path()).expect("CA");
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let server = endpoint(&files(dir.path(), "server"), loopback).expect("server");
        let same = endpoint(&files(dir.path(), "same"), loopback).expect("same version");
        let older = endpoint_speaking(&files(dir.path(), "older"), loopback, b"cascade-agent/1").expect("older");

        connect(&same, &server).await.expect("the same version connects");
        let refused = connect(&older, &server).await.expect_err("another version is refused");
        assert!(refused.contains("application protocol") || refused.contains("120"), "{refused}");
    }
}
