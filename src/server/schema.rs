//! Types for one device: the models of the object versions it announced,
//! which every payload from or to it is read and written with.

use super::registry::Registration;
use crate::lwm2m::model::{ObjectModel, ResourceType};
use crate::lwm2m::node::Schema;
use crate::lwm2m::ModelLibrary;
use std::cell::Cell;
use std::sync::Arc;

/// Types for one device: the model versions it announced, else the newest.
pub struct DeviceSchema<'a> {
    /// The model library.
    pub lib: &'a ModelLibrary,
    /// The device.
    pub reg: &'a Registration,
    /// The last object looked up: a payload's values nearly always share
    /// one object, and this lookup is the hot path of notification decoding.
    last: Cell<Option<LastModel<'a>>>,
}

/// An object id and its model, if the library has one.
type LastModel<'a> = (u16, Option<&'a Arc<ObjectModel>>);

impl<'a> DeviceSchema<'a> {
    /// Types for `reg` from `lib`.
    pub fn new(lib: &'a ModelLibrary, reg: &'a Registration) -> DeviceSchema<'a> {
        DeviceSchema {
            lib,
            reg,
            last: Cell::new(None),
        }
    }

    /// Tells the schema the model of `object` in advance (an observation
    /// resolved it once), saving the lookup.
    pub fn hint(&self, object: u16, model: &'a Arc<ObjectModel>) {
        self.last.set(Some((object, Some(model))));
    }

    /// The model of `object` at the version the device announced.
    pub fn model(&self, object: u16) -> Option<&'a Arc<ObjectModel>> {
        if let Some((o, m)) = self.last.get() {
            if o == object {
                return m;
            }
        }
        let m = self
            .reg
            .object_version(object)
            .and_then(|v| self.lib.get_compatible(object, v))
            .or_else(|| self.lib.get(object, None));
        self.last.set(Some((object, m)));
        m
    }
}

impl Schema for DeviceSchema<'_> {
    fn resource(&self, object: u16, resource: u16) -> Option<(ResourceType, bool)> {
        self.model(object)?
            .resource(resource)
            .map(|r| (r.rtype, r.multiple))
    }
}
