//! `type=docker`: the image as a docker-archive (what `docker load` reads).

use std::path::Path;

use kiln_cache::archive::Format;
use kiln_cache::compress::Conversion;
use kiln_cache::{Reference, Root};
use oci_spec::image::Descriptor;

use super::ExportError;

/// Writes `top` named `tags` to `dest` (`-`: stdout), layers converted as
/// `conv` says.
pub fn write(
    root: &Root,
    top: &Descriptor,
    tags: &[Reference],
    dest: &Path,
    conv: &Conversion,
) -> Result<(), ExportError> {
    super::write_archive(root, top, tags, dest, conv, Format::Docker)
}
