//! One input stream as the engine keeps it: its schema, route, counts and Singer versions.

use std::sync::Arc;

use crate::load::fast::Prepared;
use crate::load::report::StreamCounts;
use crate::load::route::Route;
use crate::load::schema::StreamSchema;

/// A stream of the input.
pub(super) struct Stream {
    /// The stream's name.
    pub(super) name: Arc<str>,
    /// Its latest SCHEMA, compiled (`None`: no SCHEMA yet, such as a pending pass's stream).
    pub(super) schema: Option<Arc<StreamSchema>>,
    /// How many SCHEMAs it had.
    pub(super) generation: u64,
    /// Where its records go.
    pub(super) route: Route,
    /// The kind its route writes.
    pub(super) kind: Option<&'static str>,
    /// Its counts for the summary and the report.
    pub(super) counts: StreamCounts,
    /// The Singer `version` of the stream's latest RECORD.
    pub(super) version: Option<u64>,
    /// Each version the stream took, from the ticket of its first record on.
    pub(super) versions: Vec<(u64, u64)>,
}

impl Stream {
    /// True when a parse worker made its item with the stream's SCHEMA and route of now.
    pub(super) fn is_current(&self, prepared: &Prepared) -> bool {
        self.schema
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &prepared.schema))
            && matches!(&self.route, Route::Write(map) if Arc::ptr_eq(map, &prepared.map))
    }

    /// A stream first met, routed (`kind`: what its route writes), with no record yet.
    pub(super) fn new(
        name: Arc<str>,
        schema: Option<Arc<StreamSchema>>,
        route: Route,
        kind: Option<&'static str>,
    ) -> Self {
        Stream {
            name,
            generation: u64::from(schema.is_some()),
            schema,
            route,
            kind,
            counts: StreamCounts {
                kind,
                ..StreamCounts::default()
            },
            version: None,
            versions: Vec::new(),
        }
    }
}
