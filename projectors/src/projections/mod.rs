//! The read models (being written).
