//! LwM2M data model: paths, nodes, content formats, CoRE links, object models and the model library.

pub mod ddf;
pub mod format;
pub mod library;
pub mod link;
pub mod model;
pub mod node;
pub mod path;

pub use format::ContentFormat;
pub use library::{Layer, LibraryError, ModelLibrary};
pub use model::{ObjectModel, Operations, ResourceModel, ResourceType, Version};
pub use node::{Node, Resource, Schema, Value};
pub use path::Path;
