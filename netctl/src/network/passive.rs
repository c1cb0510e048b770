//! The `host` and `null` drivers: nothing to make on the host side. For `host` the engine binds
//! the daemon's own namespace as the container's; for `null` (network `none`) the container
//! keeps a namespace of its own with loopback only.

use async_trait::async_trait;

use super::{Attachment, DriverError, HostContext, NetworkDriver};
use crate::datapath::EndpointAttachment;
use crate::model::{EndpointRecord, NetworkRecord};

/// Drivers `host` and `null`.
pub struct PassiveDriver;

#[async_trait]
impl NetworkDriver for PassiveDriver {
    async fn setup(&self, _: &HostContext, _: &NetworkRecord) -> Result<(), DriverError> {
        Ok(())
    }
    async fn teardown(&self, _: &HostContext, _: &NetworkRecord) -> Result<(), DriverError> {
        Ok(())
    }
    async fn attach(
        &self,
        _: &HostContext,
        _: &NetworkRecord,
        _: &Attachment<'_>,
    ) -> Result<(), DriverError> {
        Ok(())
    }
    async fn detach(
        &self,
        _: &HostContext,
        _: &NetworkRecord,
        _: &EndpointRecord,
    ) -> Result<(), DriverError> {
        Ok(())
    }
    async fn datapath_entry(
        &self,
        _: &HostContext,
        _: &NetworkRecord,
        _: &EndpointRecord,
    ) -> Result<Option<EndpointAttachment>, DriverError> {
        Ok(None)
    }
}
