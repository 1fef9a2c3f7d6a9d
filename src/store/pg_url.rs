//! Connection URLs as libpq users write them, and TLS that always verifies the server.

use tokio_postgres::Config;
use tokio_postgres::config::SslMode;

/// How connections are made: plain, or TLS with the server's certificate verified (against the
/// system's trust store, or the CA file the URL names with `sslrootcert`). There is no TLS
/// without verification.
#[derive(Clone)]
pub(super) enum Tls {
    Plain,
    Verified(tokio_postgres_rustls::MakeRustlsConnect),
}

/// Parses a connection URL as libpq users write it. tokio-postgres knows `sslmode` disable,
/// prefer and require; here every mode but disable verifies the certificate, so libpq's
/// `verify-ca` and `verify-full` mean require, and `sslrootcert=FILE` is read here. Without an
/// `sslmode` the connection is plain (libpq would try TLS without verifying it, which a
/// verifying client cannot do against a server's self-signed default certificate).
pub(super) fn parse_url(url: &str) -> Result<(Config, Tls), String> {
    let (url, root) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        let mut root = None;
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .filter_map(|(key, value)| match (&*key, &*value) {
                ("sslrootcert", _) => {
                    root = Some(std::path::PathBuf::from(&*value));
                    None
                }
                ("sslmode", "verify-ca" | "verify-full") => Some((key.into_owned(), "require".to_owned())),
                _ => Some((key.into_owned(), value.into_owned())),
            })
            .collect();
        parsed.set_query(None);
        if !pairs.is_empty() {
            parsed.query_pairs_mut().extend_pairs(pairs);
        }
        (parsed.to_string(), root)
    } else {
        (url.to_owned(), None)
    };
    let mut config: Config =
        url.parse().map_err(|e: tokio_postgres::Error| match std::error::Error::source(&e) {
            Some(source) => source.to_string(),
            None => e.to_string(),
        })?;
    if !url.contains("sslmode=") {
        config.ssl_mode(SslMode::Disable);
    }
    let tls = match config.get_ssl_mode() {
        SslMode::Disable => Tls::Plain,
        _ => Tls::Verified(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(root.as_deref())?)),
    };
    Ok((config, tls))
}

/// Checks a connection URL as [`Pool::open`] will read it (the CA file included), connecting to
/// nothing: for `config check`.
pub(in crate::store) fn check_url(url: &str) -> Result<(), String> {
    parse_url(url).map(|_| ())
}

fn tls_config(root: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match root {
        Some(path) => {
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(format!("sslrootcert {}: no certificate in it", path.display()));
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Where a connection URL points, without its password: for messages and logs.
pub(super) fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().map_or(String::new(), |p| format!(":{p}"));
    let user = config.get_user().map_or(String::new(), |u| format!("{u}@"));
    let db = config.get_dbname().unwrap_or("");
    format!("postgresql://{user}{}{port}/{db}", hosts.join(","))
}
