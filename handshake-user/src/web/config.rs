//! `--web.config.file`: the YAML file Prometheus exporters share
//! (prometheus/exporter-toolkit), so operators reuse the one they have:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: /etc/handshake-monitor/tls.crt
//!   key_file: /etc/handshake-monitor/tls.key
//!   client_auth_type: RequireAndVerifyClientCert   # optional
//!   client_ca_file: /etc/handshake-monitor/ca.crt  # with the above
//!   min_version: TLS12                             # or TLS13
//! basic_auth_users:
//!   prometheus: $2y$10$...                         # bcrypt hashes
//! http_server_config:
//!   headers:
//!     X-Frame-Options: deny
//! ```
//!
//! Keys this agent does not implement are refused with one line, rather
//! than ignored: a setting that silently does nothing is worse than none.
use std::{collections::BTreeMap, path::Path, sync::Arc};

use anyhow::{Context as _, Result, bail};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde::Deserialize;
use tokio_rustls::rustls::{self, RootCertStore, server::WebPkiClientVerifier};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<Tls>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    http_server_config: Option<HttpServer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tls {
    cert_file: String,
    key_file: String,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpServer {
    headers: Option<BTreeMap<String, String>>,
}

/// What the endpoint enforces.
#[derive(Default)]
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// user -> bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
}

fn version(name: &str) -> Result<&'static rustls::SupportedProtocolVersion> {
    match name {
        "TLS12" => Ok(&rustls::version::TLS12),
        "TLS13" => Ok(&rustls::version::TLS13),
        other => bail!("TLS version {other:?} is not supported (TLS12 or TLS13)"),
    }
}

fn tls(t: &Tls, base: &Path) -> Result<rustls::ServerConfig> {
    let path = |p: &str| base.join(p);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path(&t.cert_file))
        .with_context(|| format!("cannot read cert_file {}", t.cert_file))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("cert_file {}: not PEM certificates", t.cert_file))?;
    if certs.is_empty() {
        bail!("cert_file {}: no certificate in it", t.cert_file);
    }
    let key = PrivateKeyDer::from_pem_file(path(&t.key_file))
        .with_context(|| format!("key_file {}: no PEM private key read", t.key_file))?;
    let all = [&rustls::version::TLS13, &rustls::version::TLS12];
    let lowest = t.min_version.as_deref().map(version).transpose()?;
    let highest = t.max_version.as_deref().map(version).transpose()?;
    let rank = |v: &rustls::SupportedProtocolVersion| {
        usize::from(v.version == rustls::ProtocolVersion::TLSv1_3)
    };
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = all
        .into_iter()
        .filter(|v| lowest.is_none_or(|l| rank(v) >= rank(l)))
        .filter(|v| highest.is_none_or(|h| rank(v) <= rank(h)))
        .collect();
    if versions.is_empty() {
        bail!("min_version is above max_version");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .context("TLS versions")?;
    let kind = t.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match kind {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let Some(ca) = &t.client_ca_file else {
                bail!("client_auth_type {kind} needs client_ca_file");
            };
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path(ca))
                .with_context(|| format!("cannot read client_ca_file {ca}"))?
            {
                roots
                    .add(cert.with_context(|| format!("client_ca_file {ca}: not PEM"))?)
                    .with_context(|| format!("client_ca_file {ca}"))?;
            }
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if kind == "VerifyClientCertIfGiven" {
                verifier = verifier.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(verifier.build().context("client_ca_file")?)
        }
        other => bail!(
            "client_auth_type {other:?} is not supported (NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
        ),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("cert_file and key_file do not make a certificate and its key")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A bcrypt hash as exporter-toolkit takes them ($2a$, $2b$, $2y$).
fn check_hash(user: &str, hash: &str) -> Result<()> {
    let ok = hash.len() == 60
        && ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
        && bcrypt::verify("", hash).is_ok();
    if !ok {
        bail!("basic_auth_users: the password of {user:?} is not a bcrypt hash");
    }
    Ok(())
}

impl WebConfig {
    /// Reads and checks `path` (relative file names in it are relative to
    /// its directory, as exporter-toolkit has them).
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("cannot read web config file {}", path.display()))?;
        // Not /dev/zero nor a FIFO: a regular file, and a small one.
        if !meta.is_file() || meta.len() > 1 << 20 {
            bail!(
                "web config file {}: not a regular file of at most 1 MiB",
                path.display()
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read web config file {}", path.display()))?;
        Self::parse(&text, path.parent().unwrap_or(Path::new(".")))
            .with_context(|| format!("web config file {}", path.display()))
    }

    pub fn parse(text: &str, base: &Path) -> Result<Self> {
        let file: File = if text.trim().is_empty() {
            File::default()
        } else {
            serde_norway::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?
        };
        let users = file.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            check_hash(user, hash)?;
        }
        Ok(Self {
            tls: file
                .tls_server_config
                .as_ref()
                .map(|t| tls(t, base))
                .transpose()?
                .map(Arc::new),
            users,
            headers: file
                .http_server_config
                .and_then(|h| h.headers)
                .unwrap_or_default()
                .into_iter()
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!(
            "{:#}",
            WebConfig::parse(text, Path::new("/nonexistent"))
                .err()
                .expect("an error")
        )
    }

    #[test]
    fn unknown_keys_and_bad_hashes_are_refused() {
        assert!(
            err("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [x]\n")
                .contains("unknown field `cipher_suites`")
        );
        assert!(err("basic_auth_users:\n  alice: secret\n").contains("not a bcrypt hash"));
        assert!(err("colour: blue\n").contains("unknown field `colour`"));
        assert!(
            err("tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n")
                .contains("cannot read cert_file a.crt")
        );
    }

    #[test]
    fn users_and_headers_are_read() {
        let hash = bcrypt::hash("pw", 4).expect("hash");
        let c = WebConfig::parse(
            &format!("basic_auth_users:\n  alice: {hash}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"),
            Path::new("."),
        )
        .expect("valid");
        assert!(c.tls.is_none());
        assert_eq!(c.users.get("alice"), Some(&hash));
        assert_eq!(
            c.headers,
            vec![("X-Frame-Options".to_owned(), "deny".to_owned())]
        );
        assert!(
            WebConfig::parse("", Path::new("."))
                .expect("empty")
                .users
                .is_empty()
        );
    }
}
