//! Container ids and docker-like names (`adjective_surname12`).

pub(super) fn valid_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

/// `N` random bytes from the OS (getrandom(2)): ids and name seeds.
pub(super) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if getrandom::fill(&mut buf).is_err() {
        // No randomness: time and pid still make clashes unlikely, and the
        // store's lock plus the name check catch the rest.
        let seed = blake3::hash(
            format!(
                "{:?}{}",
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH),
                std::process::id()
            )
            .as_bytes(),
        );
        for (d, s) in buf.iter_mut().zip(seed.as_bytes().iter().cycle()) {
            *d = *s;
        }
    }
    buf
}

const ADJECTIVES: [&str; 24] = [
    "admiring",
    "brave",
    "clever",
    "dazzling",
    "eager",
    "focused",
    "gallant",
    "happy",
    "inspiring",
    "jolly",
    "keen",
    "loving",
    "modest",
    "nifty",
    "optimistic",
    "peaceful",
    "quirky",
    "relaxed",
    "serene",
    "trusting",
    "upbeat",
    "vibrant",
    "wizardly",
    "zealous",
];
const SURNAMES: [&str; 24] = [
    "albattani",
    "babbage",
    "curie",
    "darwin",
    "euclid",
    "feynman",
    "galileo",
    "hopper",
    "hypatia",
    "johnson",
    "kepler",
    "lovelace",
    "meitner",
    "newton",
    "noether",
    "pascal",
    "ritchie",
    "shannon",
    "thompson",
    "turing",
    "wozniak",
    "yonath",
    "zhukovsky",
    "lamport",
];

/// A docker-like `adjective_surname` name.
pub(super) fn generated_name(seed: u64) -> String {
    let a = ADJECTIVES[(seed % ADJECTIVES.len() as u64) as usize];
    let s = SURNAMES[((seed / 64) % SURNAMES.len() as u64) as usize];
    let n = (seed / 4096) % 100;
    format!("{a}_{s}{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_vary() {
        let a = generated_name(1);
        let b = generated_name(12345678);
        assert!(valid_name(&a) && valid_name(&b));
        assert_ne!(a, b);
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
    }
}
