//! `[store]`: where the source of truth lives — the embedded redb file in `data_dir` (the
//! default, one machine), or a PostgreSQL database shared by any number of replicas.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Store, StoreResult};
use crate::setting::{Invalid, Secret, refuse};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// `<data_dir>/sputnik.redb`, opened by one process.
    #[default]
    Redb,
    /// A PostgreSQL database at `store.url`.
    Postgres,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    pub backend: StoreBackend,
    /// For `backend = "postgres"`: `postgresql://USER:PASSWORD@HOST:PORT/DATABASE`. A secret:
    /// it is masked wherever settings are shown.
    pub url: Secret,
}

impl StoreSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        match self.backend {
            StoreBackend::Postgres if self.url.is_empty() => refuse(
                "store.url",
                "store.backend is \"postgres\", so a connection URL is needed: \
                 postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
            ),
            StoreBackend::Postgres => match super::pg_url::check_url(self.url.expose()) {
                Ok(()) => Ok(()),
                Err(reason) => refuse(
                    "store.url",
                    format!(
                        "not a PostgreSQL connection URL ({reason}); write it as \
                         postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
                    ),
                ),
            },
            StoreBackend::Redb if !self.url.is_empty() => refuse(
                "store.url",
                "is set, but store.backend is \"redb\"; set store.backend = \"postgres\" to use it",
            ),
            StoreBackend::Redb => Ok(()),
        }
    }

    /// Opens the configured store; `redb_path` is the embedded file's place.
    pub fn open(&self, redb_path: &Path) -> StoreResult<Store> {
        match self.backend {
            StoreBackend::Redb => Store::open(redb_path),
            StoreBackend::Postgres => Store::connect(self.url.expose()),
        }
    }
}
