//! vendors (work in progress)
