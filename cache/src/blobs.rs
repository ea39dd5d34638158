//! The content-addressed blob store.
//!
//! Blobs live at `blobs/sha256/<hex>` and are only ever created by renaming
//! a fully written, verified and fsynced temp file into place, so a reader
//! either sees the whole blob or none of it, and a crash at any moment
//! leaves only a temp file that the next `Root::open` removes.

use std::fs::{self, File, OpenOptions};

use crate::sparse::HoleWriter;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::lock;

/// Temp files end in this so that cleaning never touches anything else.
const TMP_SUFFIX: &str = ".partial";

/// Handle on the blob folder of a store; cheap to clone.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    pub(crate) fn new(dir: PathBuf, tmp: PathBuf) -> BlobStore {
        BlobStore { dir, tmp }
    }

    /// Where a blob lives (whether or not it is present), for callers that
    /// hand the file to other tools (e.g. mount or hardlink a layer).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// Starts a streamed write. With `expected`, the commit fails unless the
    /// content hashes to it; with `expected_size`, writing past that size
    /// fails at once, so a lying source cannot fill the disk.
    pub fn writer(
        &self,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<BlobWriter> {
        let (file, tmp_path) = create_locked_temp(&self.tmp)?;
        Ok(BlobWriter {
            out: Some(HoleWriter::with_capacity(256 * 1024, file)),
            tmp_path,
            dir: self.dir.clone(),
            hasher: Sha256::new(),
            written: 0,
            expected: expected.cloned(),
            expected_size,
        })
    }

    /// Stores a small in-memory document (manifest, config, index).
    pub fn put(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        if self.has(&digest) {
            return Ok(digest);
        }
        let mut w = self.writer(Some(&digest), Some(bytes.len() as u64))?;
        w.write_all(bytes).map_err(|e| Error::io(&w.tmp_path, e))?;
        w.commit()?;
        Ok(digest)
    }

    /// Streams a reader into the store, verifying as [`BlobStore::writer`].
    pub fn copy_from(
        &self,
        reader: &mut dyn Read,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Digest, u64)> {
        let mut w = self.writer(expected, expected_size)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(w.error(e)),
            };
            let chunk = buf.get(..n).unwrap_or_default();
            w.write_all(chunk).map_err(|e| w.error(e))?;
        }
        w.commit()
    }

    /// True if the blob is present (and therefore complete and verified).
    pub fn has(&self, digest: &Digest) -> bool {
        fs::metadata(self.path(digest)).is_ok_and(|m| m.is_file())
    }

    /// Opens a blob for streaming reads.
    pub fn open(&self, digest: &Digest) -> Result<File> {
        let p = self.path(digest);
        File::open(&p).map_err(|e| self.not_found_or(digest, &p, e))
    }

    /// Reads a whole blob; meant for small JSON documents.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let p = self.path(digest);
        fs::read(&p).map_err(|e| self.not_found_or(digest, &p, e))
    }

    /// The blob's size in bytes.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        let p = self.path(digest);
        fs::metadata(&p)
            .map(|m| m.len())
            .map_err(|e| self.not_found_or(digest, &p, e))
    }

    /// Deletes a blob; `Ok(false)` if it was not there. Only garbage
    /// collection should call this.
    pub fn remove(&self, digest: &Digest) -> Result<bool> {
        let p = self.path(digest);
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    /// Every blob in the store (file names that are not digests are
    /// ignored).
    pub fn list(&self) -> Result<Vec<Digest>> {
        let rd = fs::read_dir(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(&self.dir, e))?;
            if let Some(name) = entry.file_name().to_str() {
                if let Ok(d) = format!("sha256:{name}").parse::<Digest>() {
                    out.push(d);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn not_found_or(&self, digest: &Digest, path: &Path, e: io::Error) -> Error {
        if e.kind() == io::ErrorKind::NotFound {
            Error::BlobNotFound(digest.to_string())
        } else {
            Error::io(path, e)
        }
    }
}

/// A blob being written. Commit it to make it visible; drop it to discard.
#[derive(Debug)]
pub struct BlobWriter {
    out: Option<HoleWriter>,
    tmp_path: PathBuf,
    dir: PathBuf,
    hasher: Sha256,
    written: u64,
    expected: Option<Digest>,
    expected_size: Option<u64>,
}

impl BlobWriter {
    /// Bytes written so far, for progress reporting.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verifies size and digest, fsyncs and atomically renames the blob
    /// into place. On any failure the temp file is deleted and nothing
    /// becomes visible.
    pub fn commit(self) -> Result<(Digest, u64)> {
        let pending = self.finish()?;
        let out = (pending.digest.clone(), pending.size);
        pending.commit()?;
        Ok(out)
    }

    /// Verifies size and digest and fsyncs, but keeps the blob invisible,
    /// so an import can check a whole set of blobs before any of them
    /// enters the store.
    pub fn finish(mut self) -> Result<PendingBlob> {
        let out = match self.out.take() {
            Some(o) => o,
            None => return Err(self.error(io::Error::other("writer already closed"))),
        };
        let file = out.into_inner().map_err(|e| Error::io(&self.tmp_path, e))?;
        let what = self
            .expected
            .as_ref()
            .map_or_else(|| "blob".to_string(), |d| format!("blob {d}"));
        if let Some(size) = self.expected_size {
            if size != self.written {
                return Err(Error::SizeMismatch {
                    what,
                    expected: size,
                    actual: self.written,
                });
            }
        }
        let digest = Digest::from_sha256(std::mem::take(&mut self.hasher));
        if let Some(expected) = &self.expected {
            if *expected != digest {
                return Err(Error::DigestMismatch {
                    expected: expected.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        file.sync_all().map_err(|e| Error::io(&self.tmp_path, e))?;
        // Ownership of the temp file passes to the pending blob.
        let tmp_path = std::mem::take(&mut self.tmp_path);
        Ok(PendingBlob {
            _file: file,
            tmp_path,
            dir: self.dir.clone(),
            digest,
            size: self.written,
        })
    }

    fn error(&self, e: io::Error) -> Error {
        Error::io(&self.tmp_path, e)
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(limit) = self.expected_size {
            if self.written + buf.len() as u64 > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "more data than the {limit} bytes announced for {}",
                        self.expected
                            .as_ref()
                            .map_or_else(|| "blob".to_string(), |d| d.to_string())
                    ),
                ));
            }
        }
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("blob writer already committed"))?;
        let n = out.write(buf)?;
        let written = buf.get(..n).unwrap_or_default();
        self.hasher.update(written);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.out.as_mut() {
            Some(o) => o.flush(),
            None => Ok(()),
        }
    }
}

/// A verified, fsynced blob not yet visible in the store. Dropping it
/// discards it; its temp file stays flocked (safe from cleaners) meanwhile.
#[derive(Debug)]
pub struct PendingBlob {
    _file: File,
    tmp_path: PathBuf,
    dir: PathBuf,
    digest: Digest,
    size: u64,
}

impl PendingBlob {
    /// The verified digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Where the content can be read before commit.
    pub fn path(&self) -> &Path {
        &self.tmp_path
    }

    /// Makes the blob visible (atomic rename, then directory fsync).
    pub fn commit(mut self) -> Result<()> {
        let dest = self.dir.join(self.digest.hex());
        fs::rename(&self.tmp_path, &dest).map_err(|e| Error::io(&dest, e))?;
        self.tmp_path = PathBuf::new();
        sync_dir(&self.dir)
    }
}

impl Drop for PendingBlob {
    fn drop(&mut self) {
        if !self.tmp_path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.tmp_path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates a temp file and takes an exclusive flock on it for as long as
/// the file stays open. A cleaner may, in the instant between create and
/// lock, have judged the file dead and unlinked it: the identity check
/// after locking catches that and starts over.
pub(crate) fn create_locked_temp(tmp_dir: &Path) -> Result<(File, PathBuf)> {
    for _ in 0..16 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "{}-{}-{nanos:08x}{TMP_SUFFIX}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = tmp_dir.join(name);
        let file = match OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&path, e)),
        };
        lock::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| Error::io(&path, e))?;
        let ours = file.metadata().map_err(|e| Error::io(&path, e))?;
        match fs::metadata(&path) {
            Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => return Ok((file, path)),
            _ => continue,
        }
    }
    Err(Error::io(
        tmp_dir,
        io::Error::other("could not create a temp file"),
    ))
}

/// Removes temp files whose writer is gone (its flock was released by
/// death). Returns how many were removed.
pub(crate) fn clean_temp(tmp_dir: &Path) -> Result<usize> {
    let rd = match fs::read_dir(tmp_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(tmp_dir, e)),
    };
    let mut removed = 0;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(tmp_dir, e))?;
        let path = entry.path();
        let is_temp = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(TMP_SUFFIX));
        if !is_temp {
            continue;
        }
        let Ok(file) = OpenOptions::new().read(true).open(&path) else {
            continue;
        };
        if lock::try_exclusive(&file).unwrap_or(false) && fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// fsyncs a directory so a rename in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}
