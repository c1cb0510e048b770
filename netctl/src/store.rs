//! Persistent state behind a small trait, so a distributed store (etcd) can back multi-host
//! networks later. The local implementation is redb: every change is one ACID transaction, so
//! a crash never leaves a half-written record.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use crate::model::{ContainerRecord, NetworkRecord};

const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be made.
    #[error("cannot create state directory {path}: {source}")]
    Dir {
        /// Directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The database failed.
    #[error("state database: {0}")]
    Db(String),
    /// A record could not be (de)serialized.
    #[error("state record {key}: {source}")]
    Record {
        /// Record key.
        key: String,
        /// Cause.
        source: serde_json::Error,
    },
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Everything the store holds.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// All networks.
    pub networks: Vec<NetworkRecord>,
    /// All containers.
    pub containers: Vec<ContainerRecord>,
}

/// The state store the daemon writes through.
pub trait Store: Send + Sync {
    /// Reads everything.
    fn load(&self) -> Result<Snapshot, StoreError>;
    /// Inserts or replaces a network.
    fn put_network(&self, network: &NetworkRecord) -> Result<(), StoreError>;
    /// Removes a network (absent is fine).
    fn delete_network(&self, id: &str) -> Result<(), StoreError>;
    /// Inserts or replaces a container.
    fn put_container(&self, container: &ContainerRecord) -> Result<(), StoreError>;
    /// Removes a container (absent is fine).
    fn delete_container(&self, id: &str) -> Result<(), StoreError>;
}

/// redb file `state.redb` in the state directory.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens (or creates) the store under `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Dir {
            path: state_dir.display().to_string(),
            source,
        })?;
        let db = Database::create(state_dir.join("state.redb")).map_err(db_err)?;
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(NETWORKS).map_err(db_err)?;
        txn.open_table(CONTAINERS).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        Ok(RedbStore { db })
    }

    fn put(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &impl serde::Serialize,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Record {
            key: key.to_string(),
            source,
        })?;
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(table)
            .map_err(db_err)?
            .insert(key, bytes.as_slice())
            .map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    fn delete(&self, table: TableDefinition<&str, &[u8]>, key: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(table)
            .map_err(db_err)?
            .remove(key)
            .map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    fn all<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
    ) -> Result<Vec<T>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(table).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (key, value) = entry.map_err(db_err)?;
            let record =
                serde_json::from_slice(value.value()).map_err(|source| StoreError::Record {
                    key: key.value().to_string(),
                    source,
                })?;
            out.push(record);
        }
        Ok(out)
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot {
            networks: self.all(NETWORKS)?,
            containers: self.all(CONTAINERS)?,
        })
    }
    fn put_network(&self, network: &NetworkRecord) -> Result<(), StoreError> {
        self.put(NETWORKS, &network.id, network)
    }
    fn delete_network(&self, id: &str) -> Result<(), StoreError> {
        self.delete(NETWORKS, id)
    }
    fn put_container(&self, container: &ContainerRecord) -> Result<(), StoreError> {
        self.put(CONTAINERS, &container.id, container)
    }
    fn delete_container(&self, id: &str) -> Result<(), StoreError> {
        self.delete(CONTAINERS, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{new_id, now_rfc3339};

    #[test]
    fn records_survive_reopen_and_deletes_stick() {
        let dir = std::env::temp_dir().join(format!("netctl-store-test-{}", std::process::id()));
        let c = ContainerRecord {
            id: new_id(),
            name: "web".into(),
            created: now_rfc3339(),
            endpoints: vec![],
            ports: vec![],
            dns: vec![],
        };
        let d = ContainerRecord {
            id: new_id(),
            name: "db".into(),
            created: now_rfc3339(),
            endpoints: vec![],
            ports: vec![],
            dns: vec![],
        };
        {
            let store = RedbStore::open(&dir).unwrap();
            store.put_container(&c).unwrap();
            store.put_container(&d).unwrap();
            store.delete_container(&d.id).unwrap();
        }
        let store = RedbStore::open(&dir).unwrap();
        let snap = store.load().unwrap();
        assert_eq!(snap.containers.len(), 1);
        assert_eq!(snap.containers[0].name, "web");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
