//! The SBOM: an SPDX 2.3 JSON document of the packages in the image, as
//! BuildKit's default scanner (docker/buildkit-syft-scanner) writes it for
//! `--sbom=true`.
//!
//! The image's root filesystem (its layers applied in a temporary folder
//! of the store) is searched for the package databases of
//! - dpkg: `/var/lib/dpkg/status` and `/var/lib/dpkg/status.d/*`
//!   (installed packages only),
//! - apk: `/lib/apk/db/installed`,
//! - Python: `*.dist-info/METADATA` and `*.egg-info/PKG-INFO`,
//! - npm: `node_modules/[@scope/]NAME/package.json`.
//!
//! Each package has a package URL (`pkg:deb/debian/…`, `pkg:apk/alpine/…`,
//! `pkg:pypi/…`, `pkg:npm/…`) as syft writes them; the document describes
//! the image, which contains every package. Files are read with a size cap
//! and never through symlinks, so a hostile image cannot make the scan
//! read outside its root or without end.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use kiln_cache::{Digest, Root};
use serde_json::{json, Value};

use super::AttestError;
use crate::export::Built;

/// Largest package database read (dpkg status files of big images are a
/// few MiB).
const MAX_DB: u64 = 64 << 20;
/// Largest `package.json` or `METADATA` read.
const MAX_MANIFEST: u64 = 4 << 20;
/// Folders never searched (pseudo filesystems when an image carries them).
const SKIP: &[&str] = &["proc", "sys", "dev"];

/// One package found.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    /// `deb`, `apk`, `python`, `npm`.
    pub kind: &'static str,
    pub name: String,
    pub version: String,
    /// The package URL.
    pub purl: String,
    /// A valid SPDX license expression, or `None` (NOASSERTION).
    pub license: Option<String>,
    /// `Person: …` / `Organization: …`, or `None`.
    pub supplier: Option<String>,
    /// The database it was found in, inside the image.
    pub location: String,
}

/// The SPDX document for one platform's image `b`, named by the
/// statement's subject names.
pub fn document(
    root: &Root,
    b: &Built,
    names: &[String],
    created: &str,
) -> Result<Value, AttestError> {
    let tmp = tempfile::Builder::new()
        .prefix("sbom-")
        .tempdir_in(root.tmp_dir())?;
    let fs_root = tmp.path().join("rootfs");
    crate::export::local::write_rootfs(root, &b.layers, &fs_root)?;
    let packages = scan(&fs_root);
    let name = names.first().cloned().unwrap_or_else(|| "_".into());
    Ok(spdx(&name, &packages, created))
}

/// Every package the databases under `fs_root` list, sorted.
pub fn scan(fs_root: &Path) -> Vec<Package> {
    let distro = distro(fs_root);
    let mut out = BTreeSet::new();
    for rel in ["var/lib/dpkg/status"] {
        if let Some(text) = read_capped(&fs_root.join(rel), MAX_DB) {
            out.extend(dpkg(&text, &format!("/{rel}"), &distro));
        }
    }
    if let Ok(rd) = fs::read_dir(fs_root.join("var/lib/dpkg/status.d")) {
        for e in rd.flatten() {
            let p = e.path();
            if let Some(text) = read_capped(&p, MAX_DB) {
                let loc = format!("/var/lib/dpkg/status.d/{}", e.file_name().to_string_lossy());
                out.extend(dpkg(&text, &loc, &distro));
            }
        }
    }
    if let Some(text) = read_capped(&fs_root.join("lib/apk/db/installed"), MAX_DB) {
        out.extend(apk(&text, "/lib/apk/db/installed", &distro));
    }
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(rd) = fs::read_dir(fs_root.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let child = rel.join(&name);
            if rel.as_os_str().is_empty() && SKIP.contains(&name.as_str()) {
                continue;
            }
            let shown = format!("/{}", child.display());
            if name.ends_with(".dist-info") {
                if let Some(p) = read_capped(&fs_root.join(&child).join("METADATA"), MAX_MANIFEST)
                    .and_then(|t| python(&t, &format!("{shown}/METADATA")))
                {
                    out.insert(p);
                }
            } else if name.ends_with(".egg-info") {
                if let Some(p) = read_capped(&fs_root.join(&child).join("PKG-INFO"), MAX_MANIFEST)
                    .and_then(|t| python(&t, &format!("{shown}/PKG-INFO")))
                {
                    out.insert(p);
                }
            }
            if in_node_modules(&child) {
                let pj = fs_root.join(&child).join("package.json");
                if let Some(p) = read_capped(&pj, MAX_MANIFEST)
                    .and_then(|t| npm(&t, &format!("{shown}/package.json")))
                {
                    out.insert(p);
                }
            }
            stack.push(child);
        }
    }
    out.into_iter().collect()
}

/// True for `…/node_modules/NAME` and `…/node_modules/@scope/NAME`.
fn in_node_modules(rel: &Path) -> bool {
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [.., nm, name] if nm == "node_modules" => !name.starts_with('@') && !name.starts_with('.'),
        [.., nm, scope, _] if nm == "node_modules" => scope.starts_with('@'),
        _ => false,
    }
}

/// A regular file's text (never through a symlink), at most `cap` bytes;
/// `None` when absent, not regular, too big or not text.
fn read_capped(path: &Path, cap: u64) -> Option<String> {
    let meta = fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() || meta.len() > cap {
        return None;
    }
    let mut buf = Vec::new();
    fs::File::open(path)
        .ok()?
        .take(cap)
        .read_to_end(&mut buf)
        .ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// `ID` and `VERSION_ID` of `/etc/os-release` (or `/usr/lib/os-release`).
#[derive(Debug, Clone, Default)]
struct Distro {
    id: Option<String>,
    version: Option<String>,
}

fn distro(fs_root: &Path) -> Distro {
    let text = read_capped(&fs_root.join("etc/os-release"), 1 << 16)
        .or_else(|| read_capped(&fs_root.join("usr/lib/os-release"), 1 << 16))
        .unwrap_or_default();
    let mut d = Distro::default();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
            match k.trim() {
                "ID" => d.id = Some(v),
                "VERSION_ID" => d.version = Some(v),
                _ => {}
            }
        }
    }
    d
}

/// Percent-encodes a purl segment (RFC 3986 unreserved characters stay).
fn purl_escape(s: &str) -> String {
    escape_keeping(s, b"-._~")
}

/// Percent-encodes all but alphanumerics and `keep`.
fn escape_keeping(s: &str, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `name@version` with qualifiers, for a purl of `kind/namespace`.
fn purl(prefix: &str, name: &str, version: &str, qualifiers: &[(&str, Option<&str>)]) -> String {
    let mut s = format!("pkg:{prefix}/{}", purl_escape(name));
    if !version.is_empty() {
        s.push('@');
        // Versions keep `+` (`2.36-9+deb12u4`), as syft writes them.
        s.push_str(&escape_keeping(version, b"-._~+"));
    }
    let q: Vec<String> = qualifiers
        .iter()
        .filter_map(|(k, v)| {
            v.filter(|v| !v.is_empty())
                .map(|v| format!("{k}={}", purl_escape(v)))
        })
        .collect();
    if !q.is_empty() {
        s.push('?');
        s.push_str(&q.join("&"));
    }
    s
}

/// The paragraphs of a deb822-like file (dpkg status, apk installed):
/// `Key: value` fields (continuation lines folded), blank-line separated.
fn paragraphs(text: &str, sep: char) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            last = None;
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(v) = last.as_ref().and_then(|k| cur.get_mut(k)) {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(sep) {
            let k = k.trim().to_string();
            // apk repeats some keys per file (F:, R:, Z:); the first of
            // each is all a package needs.
            cur.entry(k.clone()).or_insert_with(|| v.trim().to_string());
            last = Some(k);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn person(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| format!("Person: {s}"))
}

fn dpkg(text: &str, location: &str, d: &Distro) -> Vec<Package> {
    let ns = d.id.clone().unwrap_or_else(|| "debian".into());
    let distro = d.version.as_ref().map(|v| format!("{ns}-{v}"));
    paragraphs(text, ':')
        .into_iter()
        .filter(|p| {
            p.get("Status")
                .is_none_or(|s| s.split_whitespace().last() == Some("installed"))
        })
        .filter_map(|p| {
            let name = p.get("Package")?.clone();
            let version = p.get("Version").cloned().unwrap_or_default();
            let arch = p.get("Architecture").cloned();
            let upstream = p.get("Source").map(|s| {
                // `src (version)` names the source package's own version.
                s.split_whitespace().next().unwrap_or(s).to_string()
            });
            let upstream = upstream.filter(|s| *s != name);
            Some(Package {
                kind: "deb",
                purl: purl(
                    &format!("deb/{}", purl_escape(&ns)),
                    &name,
                    &version,
                    &[
                        ("arch", arch.as_deref()),
                        ("upstream", upstream.as_deref()),
                        ("distro", distro.as_deref()),
                    ],
                ),
                supplier: p.get("Maintainer").and_then(|m| person(m)),
                license: None,
                name,
                version,
                location: location.to_string(),
            })
        })
        .collect()
}

fn apk(text: &str, location: &str, d: &Distro) -> Vec<Package> {
    let ns = d.id.clone().unwrap_or_else(|| "alpine".into());
    let distro = d.version.as_ref().map(|v| format!("{ns}-{v}"));
    paragraphs(text, ':')
        .into_iter()
        .filter_map(|p| {
            let name = p.get("P")?.clone();
            let version = p.get("V").cloned().unwrap_or_default();
            let upstream = p.get("o").filter(|o| **o != name).cloned();
            Some(Package {
                kind: "apk",
                purl: purl(
                    &format!("apk/{}", purl_escape(&ns)),
                    &name,
                    &version,
                    &[
                        ("arch", p.get("A").map(String::as_str)),
                        ("upstream", upstream.as_deref()),
                        ("distro", distro.as_deref()),
                    ],
                ),
                license: p.get("L").and_then(|l| license(l)),
                supplier: p.get("m").and_then(|m| person(m)),
                name,
                version,
                location: location.to_string(),
            })
        })
        .collect()
}

fn python(text: &str, location: &str) -> Option<Package> {
    // The headers end at the first blank line (the description follows).
    let head: String = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let p = paragraphs(&head, ':').into_iter().next()?;
    let name = p.get("Name")?.clone();
    let version = p.get("Version").cloned().unwrap_or_default();
    let lic = p
        .get("License-Expression")
        .or_else(|| p.get("License"))
        .and_then(|l| license(l));
    let supplier = p
        .get("Author")
        .or_else(|| p.get("Author-email"))
        .and_then(|a| person(a));
    // PyPI names are normalised in purls: lower case, `-` for `_` and `.`.
    let norm = name.to_ascii_lowercase().replace(['_', '.'], "-");
    Some(Package {
        kind: "python",
        purl: purl("pypi", &norm, &version, &[]),
        license: lic,
        supplier,
        name,
        version,
        location: location.to_string(),
    })
}

fn npm(text: &str, location: &str) -> Option<Package> {
    let v: Value = serde_json::from_str(text).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let version = v
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let lic = match v.get("license") {
        Some(Value::String(s)) => license(s),
        Some(Value::Object(o)) => o.get("type").and_then(Value::as_str).and_then(license),
        _ => None,
    };
    let supplier = match v.get("author") {
        Some(Value::String(s)) => person(s),
        Some(Value::Object(o)) => o.get("name").and_then(Value::as_str).and_then(person),
        _ => None,
    };
    // `@scope/name`: the scope is the purl's namespace.
    let purl = match name.split_once('/') {
        Some((scope, n)) if scope.starts_with('@') => {
            purl(&format!("npm/{}", purl_escape(scope)), n, &version, &[])
        }
        _ => purl("npm", &name, &version, &[]),
    };
    Some(Package {
        kind: "npm",
        purl,
        license: lic,
        supplier,
        name,
        version,
        location: location.to_string(),
    })
}

/// `s` when it reads as an SPDX license expression (identifiers joined by
/// AND, OR, WITH, with parentheses), else `None`: a free-text license is
/// no assertion.
fn license(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() || s.len() > 256 {
        return None;
    }
    let spaced = s.replace('(', " ( ").replace(')', " ) ");
    let mut expect_id = true;
    for tok in spaced.split_whitespace() {
        match tok {
            "(" | ")" => {}
            "AND" | "OR" | "WITH" if !expect_id => expect_id = true,
            id if expect_id
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.+:".contains(&b)) =>
            {
                expect_id = false
            }
            _ => return None,
        }
    }
    (!expect_id).then(|| s.to_string())
}

/// An SPDX identifier from free text: `[A-Za-z0-9.-]` only.
fn spdx_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The SPDX 2.3 document over `packages`, describing the image `name`.
pub fn spdx(name: &str, packages: &[Package], created: &str) -> Value {
    let root_id = "SPDXRef-DocumentRoot-Image";
    let mut pkgs = vec![json!({
        "name": name,
        "SPDXID": root_id,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
    })];
    let mut rels = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relatedSpdxElement": root_id,
        "relationshipType": "DESCRIBES",
    })];
    for p in packages {
        let unique = Digest::of(format!("{}\0{}\0{}", p.purl, p.location, p.name).as_bytes());
        let id = format!(
            "SPDXRef-Package-{}-{}-{}",
            p.kind,
            spdx_id(&p.name),
            &unique.hex()[..16]
        );
        let lic = p.license.clone().unwrap_or_else(|| "NOASSERTION".into());
        pkgs.push(json!({
            "name": p.name,
            "SPDXID": id,
            "versionInfo": p.version,
            "supplier": p.supplier.clone().unwrap_or_else(|| "NOASSERTION".into()),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": lic,
            "copyrightText": "NOASSERTION",
            "sourceInfo": format!("acquired package info from {}", p.location),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl,
            }],
        }));
        rels.push(json!({
            "spdxElementId": root_id,
            "relatedSpdxElement": id,
            "relationshipType": "CONTAINS",
        }));
    }
    // The same image and packages give the same namespace.
    let ns = Digest::of(
        serde_json::to_string(&(name, &pkgs))
            .unwrap_or_default()
            .as_bytes(),
    );
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": format!("https://kiln.invalid/spdx/{}", ns.hex()),
        "creationInfo": {
            "creators": [
                format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION")),
                "Organization: kiln",
            ],
            "created": created,
        },
        "packages": pkgs,
        "relationships": rels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            let _ = fs::create_dir_all(d);
        }
        let _ = fs::write(p, text);
    }

    #[test]
    fn finds_every_kind_of_package() {
        let Ok(tmp) = tempfile::tempdir() else { return };
        let r = tmp.path();
        write(r, "etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
        write(
            r,
            "var/lib/dpkg/status",
            "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\nMaintainer: GNU <libc@debian.org>\nDescription: x\n more\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n",
        );
        write(
            r,
            "lib/apk/db/installed",
            "C:Q1x\nP:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\no:musl\n\nP:zlib\nV:1.3\nL:Zlib\n",
        );
        write(
            r,
            "usr/lib/python3/site-packages/Foo_Bar-1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: Foo_Bar\nVersion: 1.0\nLicense: Apache-2.0\n\nLicense: not a header\n",
        );
        write(
            r,
            "app/node_modules/left-pad/package.json",
            r#"{"name":"left-pad","version":"1.3.0","license":"WTFPL"}"#,
        );
        write(
            r,
            "app/node_modules/@babel/core/package.json",
            r#"{"name":"@babel/core","version":"7.0.0","license":{"type":"MIT"}}"#,
        );
        write(r, "app/package.json", r#"{"name":"app","version":"0"}"#);
        let pkgs = scan(r);
        let purls: Vec<&str> = pkgs.iter().map(|p| p.purl.as_str()).collect();
        for want in [
            "pkg:deb/debian/libc6@2.36-9?arch=amd64&distro=debian-12",
            "pkg:apk/debian/musl@1.2.4-r2?arch=x86_64&distro=debian-12",
            "pkg:pypi/foo-bar@1.0",
            "pkg:npm/left-pad@1.3.0",
            "pkg:npm/%40babel/core@7.0.0",
        ] {
            assert!(purls.contains(&want), "{want} in {purls:?}");
        }
        assert!(!purls
            .iter()
            .any(|p| p.contains("gone") || p.contains("/app@")));
        assert_eq!(pkgs.len(), 6, "{purls:?}");
        let doc = spdx("_", &pkgs, "2026-01-01T00:00:00Z");
        assert_eq!(doc["spdxVersion"], "SPDX-2.3");
        let ps = doc["packages"].as_array().map(Vec::len);
        assert_eq!(ps, Some(7));
    }

    #[test]
    fn licenses_must_be_expressions() {
        assert_eq!(license("MIT"), Some("MIT".into()));
        assert_eq!(
            license("(MIT OR Apache-2.0)"),
            Some("(MIT OR Apache-2.0)".into())
        );
        assert!(license("GPL-2.0-only WITH Classpath-exception-2.0").is_some());
        assert_eq!(license("BSD License"), None);
        assert_eq!(license("MIT OR"), None);
    }
}
