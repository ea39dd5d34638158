//! Typed instructions built from parser nodes (owned by the planning work).
