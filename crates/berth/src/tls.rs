//! TLS: a local CA and server certificates (`berth tls init`), and serving
//! HTTPS with rustls, with certificates reloaded when their files change.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// What `berth tls init` made or reused.
pub struct InitReport {
    pub ca_cert: PathBuf,
    pub ca_created: bool,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub names: Vec<String>,
}

fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Creates (or reuses) `DIR/ca.crt` + `DIR/ca.key` and issues
/// `DIR/server.crt` + `DIR/server.key` for `names` (host names or IPs).
/// An existing server key is never overwritten.
pub fn init(dir: &Path, names: &[String]) -> anyhow::Result<InitReport> {
    if names.is_empty() {
        bail!("name at least one host name or IP address for the server certificate");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_cert = dir.join("ca.crt");
    let ca_key_path = dir.join("ca.key");
    let server_cert = dir.join("server.crt");
    let server_key = dir.join("server.key");
    if server_key.exists() || server_cert.exists() {
        bail!(
            "{} or {} already exists; berth never overwrites a key (move them away to issue new ones)",
            server_cert.display(),
            server_key.display()
        );
    }

    let (ca_key, ca_pem, ca_created) = match (ca_cert.exists(), ca_key_path.exists()) {
        (true, true) => {
            let key = KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path)?)
                .with_context(|| format!("reading {}", ca_key_path.display()))?;
            (key, std::fs::read_to_string(&ca_cert)?, false)
        }
        (false, false) => {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "berth local CA");
            dn.push(DnType::OrganizationName, "berth");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_before = rcgen::date_time_ymd(2024, 1, 1);
            params.not_after = rcgen::date_time_ymd(2036, 1, 1);
            let cert = params.self_signed(&key)?;
            write_new(&ca_key_path, &key.serialize_pem(), 0o600)?;
            write_new(&ca_cert, &cert.pem(), 0o644)?;
            (key, cert.pem(), true)
        }
        _ => bail!(
            "{} and {} go together; one is missing",
            ca_cert.display(),
            ca_key_path.display()
        ),
    };
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("reading the CA certificate")?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names[0].clone());
    params.distinguished_name = dn;
    for n in names {
        params.subject_alt_names.push(match n.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                n.clone()
                    .try_into()
                    .with_context(|| format!("{n:?} is not a host name"))?,
            ),
        });
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // Under 398 days: what browsers and Apple's clients accept for a leaf.
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_secs() as i64;
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + time_offset(now - 86_400);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + time_offset(now + 397 * 86_400);
    let cert = params.signed_by(&key, &issuer)?;
    write_new(&server_key, &key.serialize_pem(), 0o600)?;
    // The chain a client needs: the server certificate, then the CA.
    write_new(&server_cert, &format!("{}{}", cert.pem(), ca_pem), 0o644)?;
    Ok(InitReport {
        ca_cert,
        ca_created,
        server_cert,
        server_key,
        names: names.to_vec(),
    })
}

fn time_offset(secs: i64) -> Duration {
    Duration::from_secs(secs.max(0) as u64)
}

impl InitReport {
    /// How to make clients trust the CA.
    pub fn instructions(&self) -> String {
        let ca = self.ca_cert.display();
        let host = &self.names[0];
        format!(
            "CA certificate:     {ca} ({})\n\
             server certificate: {} (for {})\n\
             server key:         {} (mode 0600)\n\n\
             Serve with:\n  berth serve --tls-cert {} --tls-key {}\n\n\
             Make clients trust the CA:\n\
             \x20 docker:          mkdir -p /etc/docker/certs.d/{host} && cp {ca} /etc/docker/certs.d/{host}/ca.crt\n\
             \x20 podman, skopeo:  mkdir -p /etc/containers/certs.d/{host} && cp {ca} /etc/containers/certs.d/{host}/ca.crt\n\
             \x20 go:              SSL_CERT_FILE={ca} go get {host}/...   (or add it to the system bundle:\n\
             \x20                  cp {ca} /usr/local/share/ca-certificates/berth.crt && update-ca-certificates)\n",
            if self.ca_created { "created" } else { "reused" },
            self.server_cert.display(),
            self.names.join(", "),
            self.server_key.display(),
            self.server_cert.display(),
            self.server_key.display(),
        )
    }
}

/// Loads a certificate chain and key into a rustls signing key.
pub fn load_certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading key {}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .context("unsupported private key")?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().context("the key does not belong to the certificate")?;
    Ok(ck)
}

/// Serves the current certificate and swaps in a new one when the files change.
#[derive(Debug)]
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
    cert: PathBuf,
    key: PathBuf,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap().clone())
    }
}

fn mtimes(a: &Path, b: &Path) -> Option<(SystemTime, SystemTime)> {
    Some((
        std::fs::metadata(a).ok()?.modified().ok()?,
        std::fs::metadata(b).ok()?.modified().ok()?,
    ))
}

impl ReloadingCert {
    pub fn new(cert: &Path, key: &Path) -> anyhow::Result<Arc<ReloadingCert>> {
        let ck = load_certified_key(cert, key)?;
        Ok(Arc::new(ReloadingCert {
            current: RwLock::new(Arc::new(ck)),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        }))
    }

    /// Checks the files every `every`; a broken new pair is logged and the old one kept.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut seen = mtimes(&this.cert, &this.key);
            loop {
                tokio::time::sleep(every).await;
                let now = mtimes(&this.cert, &this.key);
                if now.is_none() || now == seen {
                    continue;
                }
                seen = now;
                match load_certified_key(&this.cert, &this.key) {
                    Ok(ck) => {
                        *this.current.write().unwrap() = Arc::new(ck);
                        tracing::info!(cert = %this.cert.display(), "TLS certificate reloaded");
                    }
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "new TLS certificate refused; still serving the old one")
                    }
                }
            }
        });
    }
}

/// A rustls server configuration offering HTTP/2 and HTTP/1.1.
pub fn server_config(resolver: Arc<ReloadingCert>) -> Arc<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_makes_a_ca_and_a_server_certificate_and_reuses_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let r = init(dir.path(), &["registry.example.test".into(), "127.0.0.1".into()]).unwrap();
        assert!(r.ca_created);
        let mode =
            |p: &Path| std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions()) & 0o777;
        assert_eq!(mode(&dir.path().join("ca.key")), 0o600);
        assert_eq!(mode(&r.server_key), 0o600);
        load_certified_key(&r.server_cert, &r.server_key).unwrap();
        // A second run refuses to overwrite; after moving the server pair away it reuses the CA.
        assert!(init(dir.path(), &["x.test".into()]).is_err());
        let ca_before = std::fs::read(dir.path().join("ca.crt")).unwrap();
        std::fs::remove_file(&r.server_cert).unwrap();
        std::fs::remove_file(&r.server_key).unwrap();
        let again = init(dir.path(), &["other.example.test".into()]).unwrap();
        assert!(!again.ca_created);
        assert_eq!(std::fs::read(dir.path().join("ca.crt")).unwrap(), ca_before);
        assert!(again
            .instructions()
            .contains("/etc/docker/certs.d/other.example.test/ca.crt"));
    }

    #[test]
    fn mismatched_key_is_refused() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let ra = init(a.path(), &["a.test".into()]).unwrap();
        let rb = init(b.path(), &["b.test".into()]).unwrap();
        let err = load_certified_key(&ra.server_cert, &rb.server_key).unwrap_err();
        assert!(format!("{err:#}").contains("does not belong"), "{err:#}");
    }
}
