//! `--progress rawjson`: BuildKit's raw progress stream, one
//! `client.SolveStatus` JSON object per line on stderr (as `buildx build
//! --progress rawjson` prints them): vertexes with their start and
//! completion times, and logs with their bytes in base64.

use std::collections::HashMap;
use std::io::Write;

use kiln_solver::{Event, NodeId, Stream};
use serde_json::{json, Value};

/// The vertex's name for the stream: a digest-shaped id (kiln's steps
/// are graph nodes, not LLB digests), stable within the build.
fn digest(v: NodeId) -> String {
    format!("sha256:{:064x}", v.index())
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

/// Standard base64 with padding, as Go's `encoding/json` writes `[]byte`.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Prints each step event as a `SolveStatus` line.
#[derive(Default)]
pub struct RawJson {
    /// When each vertex started (RFC 3339), for its later updates.
    started: HashMap<NodeId, (String, String)>,
}

impl RawJson {
    fn vertex(&mut self, v: NodeId, name: &str) -> (String, String) {
        self.started
            .entry(v)
            .or_insert_with(|| (name.to_string(), now()))
            .clone()
    }

    fn emit(status: Value) {
        // Progress is best effort: a closed pipe must not fail the build.
        let _ = writeln!(std::io::stderr().lock(), "{status}");
    }

    /// One event of the solve.
    pub fn event(&mut self, e: &Event) {
        match e {
            Event::Cached { vertex, name } => {
                let t = now();
                Self::emit(json!({"vertexes": [{
                    "digest": digest(*vertex), "name": name,
                    "started": t, "completed": t, "cached": true,
                }]}))
            }
            Event::Started { vertex, name } => {
                let (_, t) = self.vertex(*vertex, name);
                Self::emit(json!({"vertexes": [{
                    "digest": digest(*vertex), "name": name, "started": t,
                }]}))
            }
            Event::Log {
                vertex,
                stream,
                data,
                ..
            } => {
                let s = match stream {
                    Stream::Stdout => 1,
                    Stream::Stderr => 2,
                };
                Self::emit(json!({"logs": [{
                    "vertex": digest(*vertex), "stream": s,
                    "data": base64(data.as_bytes()), "timestamp": now(),
                }]}))
            }
            Event::Warning { vertex, message } => Self::emit(json!({"warnings": [{
                "vertex": digest(*vertex), "level": 1,
                "short": base64(message.as_bytes()),
            }]})),
            Event::Done { vertex, name, .. } => {
                let (_, t) = self.vertex(*vertex, name);
                Self::emit(json!({"vertexes": [{
                    "digest": digest(*vertex), "name": name,
                    "started": t, "completed": now(),
                }]}))
            }
            Event::Error {
                vertex,
                name,
                message,
            } => {
                let (_, t) = self.vertex(*vertex, name);
                Self::emit(json!({"vertexes": [{
                    "digest": digest(*vertex), "name": name,
                    "started": t, "completed": now(), "error": message,
                }]}))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_is_standard() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"hello\n"), "aGVsbG8K");
    }
}
