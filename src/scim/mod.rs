//! scim (work in progress)
