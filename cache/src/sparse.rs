//! A buffered file writer that leaves holes where whole blocks are zeros.
//! Layers are stored uncompressed, and a sparse file in a layer (a disk
//! image, a preallocated database) is a long run of zeros in its tar: as
//! holes, they cost no disk and no time to write, and every reader still
//! sees the same bytes (so the digest is the same).

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

/// A filesystem block: holes are made only where a whole block is zeros.
pub const BLOCK: usize = 4096;

/// [`std::io::BufWriter`] for a new, empty file, but all-zero blocks (at
/// block-aligned offsets) are skipped over instead of written. Call
/// [`HoleWriter::into_inner`] at the end: it writes the rest and sets the
/// file's length (a file may end in a hole).
#[derive(Debug)]
pub struct HoleWriter {
    file: File,
    buf: Vec<u8>,
    /// Bytes the writer has been given (the file's length at the end).
    end: u64,
}

impl HoleWriter {
    /// Buffers up to `capacity` bytes (rounded up to whole blocks).
    pub fn with_capacity(capacity: usize, file: File) -> HoleWriter {
        let cap = capacity.div_ceil(BLOCK).max(1) * BLOCK;
        HoleWriter {
            file,
            buf: Vec::with_capacity(cap),
            end: 0,
        }
    }

    /// Writes (or skips) every whole block of the buffer, and with `all`
    /// the partial one at its end too.
    fn drain(&mut self, all: bool) -> io::Result<()> {
        let whole = self.buf.len() / BLOCK * BLOCK;
        let upto = if all { self.buf.len() } else { whole };
        let mut i = 0;
        while i < upto {
            let j = (i + BLOCK).min(upto);
            let block = &self.buf[i..j];
            if block.len() == BLOCK && block.iter().all(|&b| b == 0) {
                self.file.seek(SeekFrom::Current(BLOCK as i64))?;
            } else {
                self.file.write_all(block)?;
            }
            i = j;
        }
        self.buf.drain(..upto);
        Ok(())
    }

    /// Writes what is buffered, sets the length, and gives the file back.
    pub fn into_inner(mut self) -> io::Result<File> {
        self.drain(true)?;
        self.file.set_len(self.end)?;
        Ok(self.file)
    }
}

impl Write for HoleWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.buf.capacity() - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        self.end += n as u64;
        if self.buf.len() == self.buf.capacity() {
            self.drain(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Whole blocks only: the partial one waits for more (or for
        // into_inner), so later blocks stay aligned.
        self.drain(false)?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_blocks_become_holes_and_the_bytes_stay() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("f");
        let mut data = vec![0u8; 32 << 20];
        data[3] = 1;
        data[(16 << 20) + 5] = 2;
        let last = data.len() - 10;
        data[last] = 3;
        data.extend_from_slice(&[0u8; 100]);
        let mut w = HoleWriter::with_capacity(100_000, File::create(&path).unwrap());
        for chunk in data.chunks(777) {
            w.write_all(chunk).unwrap();
        }
        w.into_inner().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(allocated < 1 << 20, "{allocated} bytes allocated");

        // Nothing but zeros: a file of the right length.
        let mut w = HoleWriter::with_capacity(BLOCK, File::create(&path).unwrap());
        w.write_all(&[0u8; 3 * BLOCK + 1]).unwrap();
        w.into_inner().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; 3 * BLOCK + 1]);
    }
}
