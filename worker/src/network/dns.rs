//! The few DNS messages kiln's embedded resolver needs (RFC 1035): a query
//! with one question read, and an answer to it written (A records, or
//! none, with a response code). Everything else the resolver forwards as
//! bytes, so no general parser is needed (and no DNS crate).

/// Record types the resolver answers itself.
pub const TYPE_A: u16 = 1;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;

/// Response codes.
pub const RCODE_OK: u8 = 0;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;

/// How long answers may be cached (docker's resolver says 600 s).
const TTL: u32 = 600;

/// A query's header and its one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    /// The header's second 16 bits (opcode, RD, …) as sent.
    pub flags: u16,
    /// The question's name, lower case, without the final dot.
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The question's bytes as sent (name, type, class), echoed back.
    question: Vec<u8>,
}

impl Query {
    /// Parses a query; None when it is no standard query with exactly one
    /// question (those are forwarded or dropped).
    pub fn parse(msg: &[u8]) -> Option<Query> {
        if msg.len() < 12 {
            return None;
        }
        let id = u16::from_be_bytes([msg[0], msg[1]]);
        let flags = u16::from_be_bytes([msg[2], msg[3]]);
        let qd = u16::from_be_bytes([msg[4], msg[5]]);
        // A response, or an opcode other than QUERY.
        if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 || qd != 1 {
            return None;
        }
        let mut pos = 12;
        let mut labels = Vec::new();
        loop {
            let len = usize::from(*msg.get(pos)?);
            pos += 1;
            if len == 0 {
                break;
            }
            // Compression pointers never appear in a question sent alone.
            if len > 63 {
                return None;
            }
            let label = msg.get(pos..pos + len)?;
            labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
            pos += len;
        }
        let tail = msg.get(pos..pos + 4)?;
        let qtype = u16::from_be_bytes([tail[0], tail[1]]);
        let qclass = u16::from_be_bytes([tail[2], tail[3]]);
        Some(Query {
            id,
            flags,
            name: labels.join("."),
            qtype,
            qclass,
            question: msg[12..pos + 4].to_vec(),
        })
    }

    /// The answer to this query: `ips` as A records (for an A query), or
    /// no records, with `rcode`.
    pub fn answer(&self, rcode: u8, ips: &[std::net::Ipv4Addr]) -> Vec<u8> {
        self.answer_records(
            rcode,
            &ips.iter()
                .map(|ip| (TYPE_A, ip.octets().to_vec()))
                .collect::<Vec<_>>(),
        )
    }

    /// The answer to a PTR query: `names` as its records.
    pub fn answer_ptr(&self, names: &[String]) -> Vec<u8> {
        let records: Vec<(u16, Vec<u8>)> =
            names.iter().map(|n| (TYPE_PTR, encode_name(n))).collect();
        self.answer_records(RCODE_OK, &records)
    }

    fn answer_records(&self, rcode: u8, records: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + records.len() * 16);
        out.extend_from_slice(&self.id.to_be_bytes());
        // QR, the query's opcode and RD, AA (the resolver owns these
        // names), RA, the code.
        let flags = 0x8000 | (self.flags & 0x7900) | 0x0400 | 0x0080 | u16::from(rcode & 0xf);
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&(records.len() as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&self.question);
        for (rtype, rdata) in records {
            // The name: a pointer to the question's (offset 12).
            out.extend_from_slice(&[0xc0, 0x0c]);
            out.extend_from_slice(&rtype.to_be_bytes());
            out.extend_from_slice(&1u16.to_be_bytes());
            out.extend_from_slice(&TTL.to_be_bytes());
            out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            out.extend_from_slice(rdata);
        }
        out
    }
}

/// A name in DNS's wire form (labels, then the root).
fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let l = &l.as_bytes()[..l.len().min(63)];
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
    out
}

/// The response code of an answer (for tests and logs).
pub fn rcode_of(msg: &[u8]) -> Option<u8> {
    msg.get(3).map(|b| b & 0xf)
}

/// A query message for `name` of type `qtype` (tests, and the resolver's
/// own checks).
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100u16.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&encode_name(name));
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn query_and_answer() {
        let q = query(0x1234, "Web.appnet.", TYPE_A);
        let p = Query::parse(&q).expect("parsed");
        assert_eq!(
            (p.id, p.name.as_str(), p.qtype),
            (0x1234, "web.appnet", TYPE_A)
        );
        let a = p.answer(RCODE_OK, &[Ipv4Addr::new(172, 18, 0, 3)]);
        assert_eq!(&a[..2], &[0x12, 0x34]);
        assert_eq!(a[2] & 0x80, 0x80, "a response");
        assert_eq!(a[2] & 0x01, 0x01, "RD echoed");
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1, "one answer");
        assert_eq!(&a[a.len() - 4..], &[172, 18, 0, 3]);
        assert_eq!(
            rcode_of(&p.answer(RCODE_NXDOMAIN, &[])),
            Some(RCODE_NXDOMAIN)
        );
        // Truncated or answers are not queries.
        assert!(Query::parse(&q[..q.len() - 2]).is_none());
        assert!(Query::parse(&a).is_none());
        let ptr = Query::parse(&query(1, "3.0.18.172.in-addr.arpa", TYPE_PTR)).expect("ptr");
        let a = ptr.answer_ptr(&["web.appnet".into()]);
        assert!(a.ends_with(b"\x03web\x06appnet\x00"));
    }
}
