//! gzip in parallel blocks, as pigz writes it.
//!
//! One core deflates a few tens of MB/s, so a 1 GiB layer took most of a
//! minute to push or save. [`ParGzEncoder`] cuts the input into
//! [`BLOCK`]-sized blocks at fixed offsets and deflates them independently
//! on rayon's pool: each block is primed with the previous block's last
//! 32 KiB as its dictionary (so matches still reach back across the cut,
//! and the ratio stays within a fraction of a percent of one stream) and
//! ends with a sync flush (a byte boundary), except the last, which ends
//! the deflate stream. The pieces, concatenated, are one valid deflate
//! stream; the CRC-32 of the whole input is combined from the blocks'
//! (crc32 combine), so the result is ONE gzip member that any gzip reader
//! (gzip, Go's compress/gzip, flate2, skopeo) decodes.
//!
//! Deterministic: a block's bytes depend only on its data, its dictionary,
//! the level and whether it is last, never on how writes were split, how
//! many threads ran or which finished first. The same input gives the same
//! bytes on one core and on sixty-four. The header is the store's fixed one
//! (no mtime, no name, OS "unknown"), as flate2's `GzBuilder` wrote it
//! before.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::mpsc;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use rayon::prelude::*;

/// Input bytes per independently deflated block (pigz's default).
pub const BLOCK: usize = 128 * 1024;

/// The dictionary each block is primed with: deflate's whole window.
const DICT: usize = 32 * 1024;

/// Blocks handed to the pool at once, per thread: enough to keep every
/// thread busy while bounding what is held in memory.
const BLOCKS_PER_THREAD: usize = 4;

/// What one batch deflated: each block's bytes and the CRC-32 of its
/// input, in order.
type Deflated = io::Result<Vec<(Vec<u8>, Crc)>>;

/// A gzip writer that deflates in parallel blocks; see the module
/// documentation. Call [`ParGzEncoder::finish`] to write the trailer:
/// dropping it unfinished leaves a truncated stream.
///
/// A full batch is handed to rayon's pool and deflated while the caller
/// goes on producing the next one (walking a diff, hashing the tar), so
/// the producer and the compressors overlap. Called from a thread of a
/// rayon pool, batches are deflated before `write` returns instead: a
/// pool thread must never block waiting for its own pool.
pub struct ParGzEncoder<W: Write> {
    out: W,
    level: u32,
    /// Input not yet deflated. It always keeps at least one byte after a
    /// batch, so that the last block is only deflated (as the last) by
    /// `finish`.
    pending: Vec<u8>,
    /// The last (up to) 32 KiB of input before `pending`.
    dict: Vec<u8>,
    crc: Crc,
    header_written: bool,
    /// Input bytes that trigger a parallel batch.
    batch: usize,
    /// The batch being deflated in the background, if any.
    in_flight: Option<mpsc::Receiver<Deflated>>,
}

impl<W: Write> ParGzEncoder<W> {
    /// A writer compressing at `level` (0..=9; higher is clamped to 9)
    /// into `out`.
    pub fn new(out: W, level: u32) -> Self {
        let threads = rayon::current_num_threads().max(1);
        let batch = BLOCK * threads * BLOCKS_PER_THREAD;
        ParGzEncoder {
            out,
            level: level.min(9),
            pending: Vec::with_capacity(batch + BLOCK),
            dict: Vec::new(),
            crc: Crc::new(),
            header_written: false,
            batch,
            in_flight: None,
        }
    }

    /// Writes deflated blocks out, in order, after the header.
    fn emit(&mut self, blocks: Vec<(Vec<u8>, Crc)>) -> io::Result<()> {
        if !self.header_written {
            // What flate2's GzBuilder (and Go's gzip.Writer) put in XFL.
            let xfl = match self.level {
                9.. => 2,
                0 | 1 => 4,
                _ => 0,
            };
            // Magic, deflate, no flags, mtime 0, XFL, OS 255 ("unknown").
            self.out
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255])?;
            self.header_written = true;
        }
        for (bytes, crc) in blocks {
            self.out.write_all(&bytes)?;
            self.crc.combine(&crc);
        }
        Ok(())
    }

    /// Waits for the batch in flight, if any, and writes it out.
    fn drain(&mut self) -> io::Result<()> {
        if let Some(rx) = self.in_flight.take() {
            let blocks = rx
                .recv()
                .map_err(|_| io::Error::other("gzip: a compression job was lost"))??;
            self.emit(blocks)?;
        }
        Ok(())
    }

    /// Deflates all whole blocks of `pending` but the byte after them.
    fn start_batch(&mut self) -> io::Result<()> {
        let end = (self.pending.len() - 1) / BLOCK * BLOCK;
        let mut rest = Vec::with_capacity(self.batch + BLOCK);
        rest.extend_from_slice(self.pending.get(end..).unwrap_or_default());
        let mut data = std::mem::replace(&mut self.pending, rest);
        data.truncate(end);
        let next_dict = data.get(end - DICT..).unwrap_or_default().to_vec();
        let dict = std::mem::replace(&mut self.dict, next_dict);
        let level = self.level;
        if rayon::current_thread_index().is_some() {
            let blocks = deflate_batch(level, &dict, &data, false)?;
            return self.emit(blocks);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        rayon::spawn(move || {
            // The receiver is gone only if the encoder was dropped.
            let _ = tx.send(deflate_batch(level, &dict, &data, false));
        });
        let previous = self.in_flight.replace(rx);
        if let Some(prev) = previous {
            let blocks = prev
                .recv()
                .map_err(|_| io::Error::other("gzip: a compression job was lost"))??;
            self.emit(blocks)?;
        }
        Ok(())
    }

    /// Deflates what is left as the stream's last blocks, writes the
    /// trailer (CRC-32 and size mod 2^32) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.drain()?;
        let blocks = deflate_batch(self.level, &self.dict, &self.pending, true)?;
        self.emit(blocks)?;
        let sum = self.crc.sum();
        let size = self.crc.amount();
        self.out.write_all(&sum.to_le_bytes())?;
        self.out.write_all(&size.to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Deflates `data` (whole blocks, unless it ends the stream) in parallel,
/// the first block primed with `dict`, each later one with the 32 KiB
/// before it.
fn deflate_batch(level: u32, dict: &[u8], data: &[u8], ends_stream: bool) -> Deflated {
    let n = data.len().div_ceil(BLOCK).max(1);
    (0..n)
        .into_par_iter()
        .map(|i| {
            let start = i * BLOCK;
            let block = data
                .get(start..data.len().min(start + BLOCK))
                .unwrap_or_default();
            let d = if i == 0 {
                dict
            } else {
                data.get(start - DICT..start).unwrap_or_default()
            };
            let mut crc = Crc::new();
            crc.update(block);
            Ok((
                deflate_block(level, d, block, ends_stream && i + 1 == n)?,
                crc,
            ))
        })
        .collect()
}

impl<W: Write> Write for ParGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        if self.pending.len() > self.batch {
            self.start_batch()?;
        }
        Ok(buf.len())
    }

    /// Writes out what was compressed; input still pending stays pending
    /// (a gzip stream cannot end a block early without changing its bytes).
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

thread_local! {
    /// One deflate state per pool thread and level, reset between blocks:
    /// allocating zlib's window for every 128 KiB block costs more than
    /// the reset.
    static DEFLATE: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
}

/// Raw-deflates `data` primed with `dict`, ending with a sync flush, or
/// with the end of the stream when `last`.
fn deflate_block(level: u32, dict: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    DEFLATE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let c = match slot.as_mut() {
            Some((l, c)) if *l == level => {
                c.reset();
                c
            }
            _ => {
                let (_, c) = slot.insert((level, Compress::new(Compression::new(level), false)));
                c
            }
        };
        // Stored blocks (level 0) never look back: no dictionary needed.
        if !dict.is_empty() && level > 0 {
            c.set_dictionary(dict).map_err(io::Error::other)?;
        }
        let mut out = Vec::with_capacity(data.len() + data.len() / 8 + 64);
        let flush = if last {
            FlushCompress::Finish
        } else {
            FlushCompress::Sync
        };
        loop {
            if out.len() == out.capacity() {
                out.reserve(64 * 1024);
            }
            let done = usize::try_from(c.total_in()).unwrap_or(usize::MAX);
            let rest = data.get(done..).unwrap_or_default();
            let status = c
                .compress_vec(rest, &mut out, flush)
                .map_err(io::Error::other)?;
            let all_in = usize::try_from(c.total_in()).ok() == Some(data.len());
            match status {
                Status::StreamEnd => break,
                // A sync flush is complete once all input is in and zlib
                // stopped with room to spare.
                Status::Ok | Status::BufError if !last && all_in && out.len() < out.capacity() => {
                    break
                }
                Status::Ok | Status::BufError => {}
            }
        }
        Ok(out)
    })
}

/// Compresses `data` in one call (tests, small blobs).
pub fn compress(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    let mut enc = ParGzEncoder::new(Vec::new(), level);
    enc.write_all(data)?;
    enc.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        // GzDecoder reads exactly one member: it must hold everything.
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    fn system_gunzip(gz: &[u8]) -> Vec<u8> {
        let mut child = std::process::Command::new("gzip")
            .args(["-d", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip installed");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = gz.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().expect("gzip runs");
        writer.join().expect("writer").expect("write to gzip");
        assert!(out.status.success(), "gzip -d failed");
        out.stdout
    }

    /// Deterministic pseudo-random bytes (xorshift), no extra dependency.
    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Text-like data that compresses, with repeats far and near.
    fn compressible(n: usize) -> Vec<u8> {
        let words = [
            "layer ", "kiln ", "rayon ", "gzip ", "block ", "usr/lib/", "\n", "0123 ",
        ];
        let r = random(n, 7);
        let mut out = Vec::with_capacity(n + 16);
        let mut i = 0;
        while out.len() < n {
            out.extend_from_slice(words[(r[i % r.len()] % 8) as usize].as_bytes());
            i += 1;
        }
        out.truncate(n);
        out
    }

    fn with_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("pool")
            .install(f)
    }

    fn check(data: &[u8], level: u32) -> Vec<u8> {
        let one = with_threads(1, || compress(data, level)).expect("compress");
        let four = with_threads(4, || compress(data, level)).expect("compress");
        assert_eq!(one, four, "same bytes on 1 and 4 threads");
        // From outside any pool: batches deflate in the background.
        let global = compress(data, level).expect("compress");
        assert_eq!(one, global, "same bytes in the background");
        assert_eq!(gunzip(&one), data, "flate2 decodes it");
        assert_eq!(system_gunzip(&one), data, "gzip -d decodes it");
        // Written in odd pieces: same bytes.
        let mut enc = ParGzEncoder::new(Vec::new(), level);
        for piece in data.chunks(7919) {
            enc.write_all(piece).expect("write");
        }
        assert_eq!(
            enc.finish().expect("finish"),
            one,
            "write sizes do not matter"
        );
        one
    }

    #[test]
    fn empty_and_tiny() {
        let gz = check(b"", 6);
        // Header, an empty final block, CRC 0 and size 0.
        assert_eq!(gz.len(), 10 + 2 + 8);
        check(b"x", 6);
        check(b"x", 0);
        check(b"x", 9);
    }

    #[test]
    fn block_edges() {
        let data = compressible(3 * BLOCK + 1);
        for n in [
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            2 * BLOCK,
            3 * BLOCK + 1,
            DICT - 1,
        ] {
            check(&data[..n], 6);
        }
    }

    #[test]
    fn multi_mb_random_and_compressible() {
        let r = random(5 * 1024 * 1024 + 123, 42);
        let gz = check(&r, 6);
        assert!(gz.len() < r.len() + r.len() / 100, "random barely grows");
        let c = compressible(9 * 1024 * 1024 + 77);
        let gz = check(&c, 6);
        // Within a few percent of one single-threaded stream.
        let mut single = flate2::write::GzEncoder::new(Vec::new(), Compression::new(6));
        single.write_all(&c).expect("gzip");
        let single = single.finish().expect("gzip");
        assert!(
            gz.len() <= single.len() + single.len() / 20,
            "parallel {} vs single {}",
            gz.len(),
            single.len()
        );
        for level in [0, 1, 9] {
            check(&c[..3 * 1024 * 1024], level);
        }
    }

    #[test]
    fn header_is_fixed() {
        let gz = compress(b"hello", 6).expect("compress");
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
        let gz = compress(b"hello", 9).expect("compress");
        assert_eq!(gz[8], 2);
    }
}
