//! LwM2M data model: paths, CoRE link format, object models and the model library.

pub mod ddf;
pub mod library;
pub mod link;
pub mod model;
pub mod path;

pub use library::{Layer, LibraryError, ModelLibrary};
pub use model::{ObjectModel, Operations, ResourceModel, ResourceType, Version};
pub use path::Path;
