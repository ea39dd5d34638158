//! `kiln inspect` and `kiln container inspect`: a container's document
//! as docker prints it ([`kiln_worker::container::inspect`]); `kiln
//! inspect` falls back to images, as docker's does for a name that is no
//! container. `-f/--format` renders each document through
//! [`crate::template`].

use std::process::ExitCode;

use miette::{miette, Result};

use super::run::open_store;
use crate::template::{Format, Template};

/// One document, serialized in docker's field order.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Doc {
    Container(Box<kiln_worker::container::inspect::Doc>),
    Image(Box<super::images::InspectDoc>),
}

/// `--type` of `kiln inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Any,
    Container,
}

/// Inspects `keys`; images too unless `kind` is `Container`.
pub fn inspect(
    keys: &[String],
    format: Option<&str>,
    kind: Kind,
    platform: Option<String>,
    size: bool,
) -> Result<ExitCode> {
    let template = match Format::parse(format).map_err(|e| miette!("{e}"))? {
        Format::Default => None,
        // `inspect -f 'table …'` is no table in docker either: the text.
        Format::Table(_) => {
            Some(Template::parse(format.unwrap_or("")).map_err(|e| miette!("{e}"))?)
        }
        Format::Raw(t) => Some(t),
    };
    let (_root, store) = open_store()?;
    let mut docs: Vec<Doc> = Vec::new();
    let mut failed = false;
    for key in keys {
        match store.find(key) {
            Ok(c) => {
                let log = store.dir_of(&c.id).join("log");
                let mut doc = kiln_worker::container::inspect::document(&c, &log.to_string_lossy());
                // --- life: `-s`, docker's SizeRw and SizeRootFs.
                if size {
                    let (rw, rootfs) =
                        kiln_worker::container::files::disk_usage(&store.dir_of(&c.id), &c.lowers);
                    (doc.size_rw, doc.size_root_fs) = (Some(rw), Some(rootfs));
                }
                docs.push(Doc::Container(Box::new(doc)));
                continue;
            }
            Err(kiln_worker::container::ContainerError::NotFound(_)) if kind == Kind::Any => {}
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
                continue;
            }
        }
        match super::images::inspect_doc(key, platform.clone()) {
            Ok(v) => docs.push(Doc::Image(Box::new(v))),
            Err(e) if super::images::image_exists(key) => {
                eprintln!("Error: {e}");
                failed = true;
            }
            Err(_) => {
                eprintln!("Error: No such object: {key}");
                failed = true;
            }
        }
    }
    match template {
        None => {
            let text = serde_json::to_string_pretty(&docs).map_err(|e| miette!("{e}"))?;
            println!("{text}");
        }
        Some(t) => {
            for d in &docs {
                let v = serde_json::to_value(d).map_err(|e| miette!("{e}"))?;
                match t.render(&v) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("{e}");
                        return Ok(ExitCode::from(1));
                    }
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
