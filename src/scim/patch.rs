//! SCIM PATCH (RFC 7644 §3.5.2) as the target sends it: standard shapes only (scim.md §6, §11):
//! lowercase `op`, a `path` on every operation, `remove` without a `value`, JSON booleans.
//!
//! Group membership goes as deltas, never as `replace members` (that would drop members roster
//! does not know about): each removal is `{"op":"remove","path":"members[value eq \"<id>\"]"}`
//! and the additions of a chunk share one `{"op":"add","path":"members","value":[…]}`. A PATCH
//! is all-or-nothing on the server, so [`chunks`] cuts a group's changes into PATCHes of at
//! most `size` changes, removals first (a refused chunk is split in two by the writer,
//! `crate::vendors::patterns::Pending`).

use serde_json::{Value, json};

use super::filter;

/// The PatchOp message schema.
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// One PATCH operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    /// `add` `value` at `path` (appends to a multi-valued attribute).
    Add {
        /// The attribute path.
        path: String,
        /// The value.
        value: Value,
    },
    /// `replace` the value at `path` (adds it when absent).
    Replace {
        /// The attribute path.
        path: String,
        /// The value.
        value: Value,
    },
    /// `remove` what `path` names (no value: servers refuse one, scim.md §6).
    Remove {
        /// The attribute path, possibly with a value filter.
        path: String,
    },
}

impl Operation {
    /// `replace` `path` with `value`.
    pub fn replace(path: impl Into<String>, value: Value) -> Self {
        Operation::Replace {
            path: path.into(),
            value,
        }
    }

    /// `remove` `path`.
    pub fn remove(path: impl Into<String>) -> Self {
        Operation::Remove { path: path.into() }
    }

    /// The operation as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Operation::Add { path, value } => json!({"op": "add", "path": path, "value": value}),
            Operation::Replace { path, value } => {
                json!({"op": "replace", "path": path, "value": value})
            }
            Operation::Remove { path } => json!({"op": "remove", "path": path}),
        }
    }
}

/// A PatchOp message with these operations, in order.
pub fn body(operations: &[Operation]) -> Value {
    json!({
        "schemas": [PATCH_OP],
        "Operations": operations.iter().map(Operation::to_json).collect::<Vec<_>>(),
    })
}

/// One membership change: the member's server id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MemberChange {
    /// Remove this user id from the group.
    Remove(String),
    /// Add this user id to the group.
    Add(String),
}

impl MemberChange {
    /// The member's server id.
    pub fn id(&self) -> &str {
        match self {
            MemberChange::Remove(id) | MemberChange::Add(id) => id,
        }
    }
}

/// The operations of one chunk: a `remove` per removed member, then one `add` with every added
/// member (in the order given).
pub fn member_operations(changes: &[MemberChange]) -> Vec<Operation> {
    let mut operations: Vec<Operation> = changes
        .iter()
        .filter_map(|c| match c {
            MemberChange::Remove(id) => Some(Operation::remove(format!(
                "members[{}]",
                filter::eq("value", id)
            ))),
            MemberChange::Add(_) => None,
        })
        .collect();
    let added: Vec<Value> = changes
        .iter()
        .filter_map(|c| match c {
            MemberChange::Add(id) => Some(json!({"value": id})),
            MemberChange::Remove(_) => None,
        })
        .collect();
    if !added.is_empty() {
        operations.push(Operation::Add {
            path: "members".into(),
            value: Value::Array(added),
        });
    }
    operations
}

/// Cuts `changes` into chunks of at most `size` (at least 1), every removal before every
/// addition, each side in the order given.
pub fn chunks(changes: &[MemberChange], size: usize) -> Vec<Vec<MemberChange>> {
    let size = size.max(1);
    let ordered: Vec<MemberChange> = changes
        .iter()
        .filter(|c| matches!(c, MemberChange::Remove(_)))
        .chain(changes.iter().filter(|c| matches!(c, MemberChange::Add(_))))
        .cloned()
        .collect();
    ordered.chunks(size).map(<[MemberChange]>::to_vec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(id: &str) -> MemberChange {
        MemberChange::Add(id.into())
    }

    fn rm(id: &str) -> MemberChange {
        MemberChange::Remove(id.into())
    }

    #[test]
    fn membership_deltas_use_the_standard_shapes() {
        let ops = member_operations(&[add("u1"), rm("u\"2"), add("u3")]);
        assert_eq!(
            body(&ops),
            json!({
                "schemas": [PATCH_OP],
                "Operations": [
                    {"op": "remove", "path": "members[value eq \"u\\\"2\"]"},
                    {"op": "add", "path": "members", "value": [{"value": "u1"}, {"value": "u3"}]},
                ]
            })
        );
        assert_eq!(member_operations(&[]), vec![]);
        assert_eq!(
            Operation::replace("active", json!(false)).to_json(),
            json!({"op": "replace", "path": "active", "value": false})
        );
    }

    #[test]
    fn chunks_put_removals_first_and_respect_the_size() {
        let changes = [add("a"), rm("b"), add("c"), rm("d"), add("e")];
        assert_eq!(
            chunks(&changes, 2),
            vec![
                vec![rm("b"), rm("d")],
                vec![add("a"), add("c")],
                vec![add("e")]
            ]
        );
        assert_eq!(chunks(&changes, 0).len(), 5);
        assert_eq!(chunks(&changes, 100).len(), 1);
        assert!(chunks(&[], 3).is_empty());
    }
}
