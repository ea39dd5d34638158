//! InvalidBaseImagePlatform: a base image whose config names another
//! platform than the stage asked for, as BuildKit's
//! `validateBaseImagePlatform` (run on each dispatched stage once its base
//! is resolved). Only OS and architecture count, as BuildKit's: a variant
//! difference is not reported.

use super::{lines, rules, BasePlatform, Input, Linter, StageRef};

pub(crate) fn check(stages: &[StageRef], input: &Input, l: &mut Linter) {
    for st in stages {
        let Some(b) = input.base_platforms.get(&st.index) else {
            continue;
        };
        if let Some(detail) = message(b) {
            l.run(rules::INVALID_BASE_IMAGE_PLATFORM, lines(st.from), detail);
        }
    }
}

/// BuildKit's message, when the platforms differ: both normalised and
/// formatted with their variant (`platforms.FormatAll`).
fn message(b: &BasePlatform) -> Option<String> {
    let (want, got) = (&b.expected, &b.actual);
    if want.os == got.os && want.architecture == got.architecture {
        return None;
    }
    Some(format!(
        "Base image {} was pulled with platform \"{}\", expected \"{}\" for current build",
        b.image,
        got.normalize(),
        want.normalize()
    ))
}
