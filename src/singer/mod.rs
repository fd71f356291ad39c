//! singer (work in progress)
