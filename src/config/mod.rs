//! What every vendor's config shares: loading, the common keys, validation, and [`Secret`].

mod secret;

pub use secret::{REDACTED, Secret};
