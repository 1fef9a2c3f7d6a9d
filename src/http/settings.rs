//! `[http]`: where the health, metrics and admin API endpoints listen.

use serde::{Deserialize, Serialize};

use crate::setting::{Invalid, Secret, refuse};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address `sputnik serve` answers HTTP on (/livez, /readyz, /metrics, /api/); "" turns it off.
    pub listen: String,
    /// Bearer token of the admin API; empty: the one in `<data_dir>/admin.token`, created
    /// (mode 0600) on first start.
    pub admin_token: Secret,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings { listen: "127.0.0.1:8080".into(), admin_token: Secret::default() }
    }
}

impl HttpSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        // Empty turns HTTP off.
        let listen = self.listen.trim();
        if !listen.is_empty() && listen.parse::<std::net::SocketAddr>().is_err() {
            return refuse("http.listen", format!("{:?} is not an address like 127.0.0.1:8080", self.listen));
        }
        Ok(())
    }
}
