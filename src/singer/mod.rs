//! The Singer protocol: messages, the streaming reader, the one stdout writer, catalogs and
//! tap state.

pub mod catalog;
pub mod message;
pub mod reader;
pub mod state;
pub(crate) mod strict;
pub mod writer;

pub use catalog::{Catalog, CatalogEntry, MetadataEntry, Properties};
pub use message::{
    ActivateVersionMessage, BatchMessage, Message, Object, RecordMessage, SchemaMessage,
    StateMessage,
};
pub use reader::{
    DEFAULT_MAX_LINE_BYTES, MessageReader, ParsedLine, RawRecord, ReadError, ReadMessage,
    UnknownTypes, parse_raw, parse_read, parse_record_with,
};
pub use state::{Bookmark, TapState};
pub use writer::{SingerWriter, WriteError};
