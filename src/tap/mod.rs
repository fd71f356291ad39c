//! tap (work in progress)
