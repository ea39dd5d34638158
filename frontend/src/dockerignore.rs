//! `.dockerignore` parsing and matching (owned by the dockerignore work).
