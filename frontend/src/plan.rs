//! Per-stage resolved build plans (owned by the planning work).
