//! Unpacking a layer as a pipeline, and unpacking layers while a pull
//! downloads them.
//!
//! A layer goes compressed bytes → decompression (with the sha256 of the
//! tar, its diff_id) → tar extraction. Decompression is single-threaded
//! by nature (gzip), so, as pigz does, the stages run on threads of their
//! own joined by bounded channels: reading (the download, or the blob
//! file), inflating and hashing, and creating files overlap, and the
//! inflater never waits for the disk.
//!
//! [`PullUnpacker`] gives [`kiln_cache::registry::pull`] a sink per layer:
//! the bytes a pull receives go to the blob writer and to this pipeline at
//! once, so no blob is written and then read back. The layer is unpacked
//! into a staging folder in the process's scratch space, checked against
//! its diff_id, and moved to `layers/<diff_id>` only once the pull has
//! verified and committed its blob; a wrong blob, a broken tar or a wrong
//! diff_id removes the staging folder, so nothing half-unpacked remains.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use kiln_cache::registry::{LayerSink, LayerUnpacker, PendingLayer, Platform, UnpackError};
use kiln_cache::Digest;
use sha2::{Digest as _, Sha256};

use crate::layers::{LayerError, LayerRef};
use crate::snapshot::{self, ApplyStats};

/// Size of the pieces of tar handed from the inflater to the extractor.
const PIECE: usize = 1 << 20;
/// Pieces in flight between the inflater and the extractor.
const PIECES: usize = 8;
/// Compressed chunks (as received) in flight before the inflater.
const CHUNKS: usize = 256;

/// Reads what the previous stage sends, as one stream.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: Receiver<Vec<u8>>) -> ChannelReader {
        ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(next) => {
                    self.cur = next;
                    self.pos = 0;
                }
                // The sender is gone: the end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let rest = self.cur.get(self.pos..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// Unpacks `compressed`, the blob of `layer` (gzip, zstd or plain tar, by
/// its media type and magic bytes), into `dest`: inflating (and, with
/// `verify`, hashing) on this thread, extracting on another. With `verify`,
/// a tar whose sha256 is not the layer's diff_id is an error (the caller
/// then discards `dest`). The whole stream is always read, so the hash
/// covers what follows the tar's end marker too.
pub fn unpack_pipelined<R: Read>(
    compressed: R,
    layer: &LayerRef,
    dest: &Path,
    verify: bool,
) -> Result<ApplyStats, LayerError> {
    let mut tar = crate::layers::decompress(
        BufReader::with_capacity(256 * 1024, compressed),
        &layer.media_type,
    )
    .map_err(|source| LayerError::Io {
        what: "decompress",
        path: dest.to_path_buf(),
        source,
    })?;
    let (tx, rx) = sync_channel::<Vec<u8>>(PIECES);
    std::thread::scope(|s| {
        let extract = s.spawn(move || snapshot::apply_layer(ChannelReader::new(rx), dest));
        let mut hasher = verify.then(Sha256::new);
        let mut tx = Some(tx);
        let inflated: io::Result<()> = (|| loop {
            let mut piece = vec![0u8; PIECE];
            let mut filled = 0;
            while filled < PIECE {
                match tar.read(&mut piece[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if filled == 0 {
                return Ok(());
            }
            piece.truncate(filled);
            if let Some(h) = hasher.as_mut() {
                h.update(&piece);
            }
            // The extractor may be done before the stream is (the tar's
            // end marker, padding) or have failed: go on hashing.
            if let Some(t) = &tx {
                if t.send(piece).is_err() {
                    tx = None;
                }
            }
        })();
        drop(tx);
        let stats = extract.join().map_err(|_| LayerError::Io {
            what: "unpack",
            path: dest.to_path_buf(),
            source: io::Error::other("the extracting thread panicked"),
        })?;
        inflated.map_err(|source| LayerError::Io {
            what: "decompress",
            path: dest.to_path_buf(),
            source,
        })?;
        let stats = stats.map_err(|source| LayerError::Unpack {
            digest: layer.digest.clone(),
            source,
        })?;
        if let Some(h) = hasher {
            let actual = Digest::from_sha256(h);
            if actual != layer.diff_id {
                return Err(LayerError::DiffId {
                    digest: layer.digest.clone(),
                    expected: layer.diff_id.clone(),
                    actual,
                });
            }
        }
        Ok(stats)
    })
}

/// Unpacks the layers of a pull as they download, into the store's
/// `layers/` (the [`LayerUnpacker`] [`kiln_cache::registry::pull`] takes).
#[derive(Debug)]
pub struct PullUnpacker {
    layers: PathBuf,
    scratch: PathBuf,
    platform: Platform,
    seq: AtomicU64,
}

impl PullUnpacker {
    /// An unpacker into the store at `root` for images of `platform` (the
    /// one the pull is for; the other platforms of an index stay packed).
    /// Staging folders go in this process's scratch space, which the next
    /// kiln command removes if this one dies.
    pub fn new(root: &Path, platform: Platform) -> Result<PullUnpacker, LayerError> {
        let layers = kiln_cache::Root::layers_dir_of(root);
        let scratch = kiln_cache::Root::work_dir_of(root).join(std::process::id().to_string());
        for d in [&layers, &scratch] {
            std::fs::create_dir_all(d).map_err(|source| LayerError::Io {
                what: "create",
                path: d.clone(),
                source,
            })?;
        }
        Ok(PullUnpacker {
            layers,
            scratch,
            platform,
            seq: AtomicU64::new(0),
        })
    }
}

impl Drop for PullUnpacker {
    /// Leaves no empty scratch folder behind (a non-empty one belongs to
    /// a layer store of this process, which removes it itself).
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.scratch);
    }
}

impl LayerUnpacker for PullUnpacker {
    fn wants(&self, platform: &Platform) -> bool {
        self.platform.matches(platform)
    }

    fn start(&self, layer: &LayerRef) -> Result<Option<Box<dyn LayerSink>>, UnpackError> {
        let dest = self.layers.join(layer.diff_id.hex());
        if dest.is_dir() {
            return Ok(None);
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let staging = self.scratch.join(format!("pull-{n}"));
        std::fs::create_dir_all(&staging).map_err(|source| LayerError::Io {
            what: "create",
            path: staging.clone(),
            source,
        })?;
        let (tx, rx) = sync_channel::<Vec<u8>>(CHUNKS);
        let layer = layer.clone();
        let into = staging.join("layer");
        let worker = std::thread::Builder::new()
            .name("kiln-unpack".into())
            .spawn(move || {
                unpack_pipelined(ChannelReader::new(rx), &layer, &into, true).map(|_| ())
            })
            .map_err(|source| LayerError::Io {
                what: "start a thread for",
                path: staging.clone(),
                source,
            })?;
        Ok(Some(Box::new(Sink {
            tx: Some(tx),
            worker: Some(worker),
            staging: Staging(Some(staging)),
            dest,
        })))
    }
}

/// A staging folder, removed when dropped unless taken.
struct Staging(Option<PathBuf>);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// One layer being unpacked while it downloads.
struct Sink {
    tx: Option<SyncSender<Vec<u8>>>,
    worker: Option<JoinHandle<Result<(), LayerError>>>,
    staging: Staging,
    dest: PathBuf,
}

impl Sink {
    /// Ends the stream and waits for the pipeline's verdict.
    fn wait(&mut self) -> Result<(), LayerError> {
        self.tx = None;
        match self.worker.take() {
            Some(w) => w.join().unwrap_or_else(|_| {
                Err(LayerError::Io {
                    what: "unpack",
                    path: self.dest.clone(),
                    source: io::Error::other("the unpacking thread panicked"),
                })
            }),
            None => Ok(()),
        }
    }
}

impl LayerSink for Sink {
    fn write(&mut self, chunk: &[u8]) {
        if let Some(tx) = &self.tx {
            // A closed channel: the pipeline failed; `finish` says why.
            if tx.send(chunk.to_vec()).is_err() {
                self.tx = None;
            }
        }
    }

    fn finish(mut self: Box<Self>) -> Result<Box<dyn PendingLayer>, UnpackError> {
        self.wait()?;
        Ok(Box::new(Unpacked {
            staging: Staging(self.staging.0.take()),
            dest: self.dest.clone(),
        }))
    }
}

impl Drop for Sink {
    /// A sink dropped unfinished (a failed or cancelled transfer): the
    /// pipeline is stopped and waited for before its folder is removed, so
    /// nothing is left half-unpacked.
    fn drop(&mut self) {
        let _ = self.wait();
    }
}

/// A verified layer in its staging folder.
struct Unpacked {
    staging: Staging,
    dest: PathBuf,
}

impl PendingLayer for Unpacked {
    fn commit(self: Box<Self>) -> Result<(), UnpackError> {
        let Some(staging) = self.staging.0.clone() else {
            return Ok(());
        };
        match std::fs::rename(staging.join("layer"), &self.dest) {
            Ok(()) => Ok(()),
            // Another process put the same layer there first: theirs stays.
            Err(_) if self.dest.is_dir() => Ok(()),
            Err(source) => Err(Box::new(LayerError::Io {
                what: "rename into",
                path: self.dest.clone(),
                source,
            })),
        }
    }
}

/// The layers of a resolved image as the layer store names them; `None`
/// when its config's diff_ids do not pair up with its layers.
pub fn layer_refs(r: &kiln_cache::image::Resolved) -> Option<Vec<LayerRef>> {
    let diff_ids = r.config.pointer("/rootfs/diff_ids")?.as_array()?;
    let layers = r.manifest.layers();
    if layers.len() != diff_ids.len() {
        return None;
    }
    layers
        .iter()
        .zip(diff_ids)
        .map(|(l, id)| {
            Some(LayerRef {
                diff_id: id.as_str()?.parse().ok()?,
                digest: l.digest().as_ref().parse().ok()?,
                size: l.size(),
                media_type: l.media_type().to_string(),
            })
        })
        .collect()
}

/// Unpacks the layers of `r` that a pull left packed (their blobs were in
/// the store already, so nothing streamed through the unpacker), so that
/// after `kiln pull` every layer of the pulled platform is ready, as after
/// `docker pull`. Returns how many were unpacked.
pub fn unpack_missing(
    root: &kiln_cache::Root,
    r: &kiln_cache::image::Resolved,
) -> Result<usize, LayerError> {
    let Some(refs) = layer_refs(r) else {
        return Ok(0);
    };
    let layers_dir = kiln_cache::Root::layers_dir_of(root.path());
    let missing = refs
        .iter()
        .filter(|l| !layers_dir.join(l.diff_id.hex()).is_dir())
        .count();
    if missing > 0 {
        crate::layers::LayerStore::open(root.path())?.dirs(&refs, root.blobs())?;
    }
    Ok(missing)
}
