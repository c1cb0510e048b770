//! Live connection-tracking flows for `netctl conntrack ls`.

use super::{Engine, EngineError};
use crate::api::types::ConntrackFlow;

impl Engine {
    /// Every tracked flow (one per connection, not per direction), oldest first.
    pub fn conntrack_flows(&self) -> Result<Vec<ConntrackFlow>, EngineError> {
        let mut flows = self
            .host
            .with_datapath(|dp| dp.flows())
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        flows.sort_by_key(|f| std::cmp::Reverse(f.age));
        Ok(flows
            .into_iter()
            .map(|f| ConntrackFlow {
                protocol: f.protocol.to_string(),
                kind: f.kind.to_string(),
                original_source: f.original.0.to_string(),
                original_destination: f.original.1.to_string(),
                translated_source: f.translated.0.to_string(),
                translated_destination: f.translated.1.to_string(),
                state: f.state.to_string(),
                age_seconds: f.age.as_secs(),
                expires_in_seconds: f.expires_in.as_secs(),
            })
            .collect())
    }
}
