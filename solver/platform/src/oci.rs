//! Conversions to and from oci-spec's platform, for the image store and
//! archives, which read and write OCI descriptors.

use oci_spec::image::Descriptor;

use crate::Platform;

impl From<&oci_spec::image::Platform> for Platform {
    /// Keeps the spelling the document used; an empty variant is none.
    fn from(p: &oci_spec::image::Platform) -> Platform {
        Platform {
            os: p.os().to_string(),
            architecture: p.architecture().to_string(),
            variant: p.variant().clone().filter(|v| !v.is_empty()),
        }
    }
}

impl From<&Platform> for oci_spec::image::Platform {
    fn from(p: &Platform) -> oci_spec::image::Platform {
        let mut o = oci_spec::image::Platform::default();
        o.set_os(p.os.as_str().into());
        o.set_architecture(p.architecture.as_str().into());
        o.set_variant(p.variant.clone());
        o
    }
}

impl Platform {
    /// An index entry's platform, as the index spells it; `None` when the
    /// entry has none.
    pub fn of_descriptor(d: &Descriptor) -> Option<Platform> {
        d.platform().as_ref().map(Platform::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_oci_spec() {
        for s in [
            "linux/amd64",
            "linux/arm/v7",
            "linux/arm64",
            "windows/amd64",
            "linux/riscv64",
        ] {
            let p = Platform::parse(s).unwrap();
            let o = oci_spec::image::Platform::from(&p);
            assert_eq!(Platform::from(&o), p, "{s}");
        }
        let mut o = oci_spec::image::Platform::default();
        o.set_variant(Some(String::new()));
        assert_eq!(Platform::from(&o).variant, None);
    }
}
