//! Copies that keep holes. A context or image may hold sparse files (a
//! disk image, a database preallocated with `truncate`): copied byte for
//! byte, a 4 GiB file with 4 KiB of data costs 4 GiB of disk and the time
//! to write zeros, once per snapshot. Copies here write only the data and
//! leave the rest a hole, as `cp --sparse=auto` and docker's archive code
//! do when they unpack; what a reader sees is the same bytes.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;

use crate::sys;

/// Copies the regular file `from` (read from its start) into the empty
/// file `to`: only the data regions the filesystem reports (SEEK_DATA and
/// SEEK_HOLE), then the length. Where the filesystem cannot say, a plain
/// copy. Returns the file's length.
pub fn copy_file(from: &mut File, to: &mut File) -> io::Result<u64> {
    let len = from.metadata()?.len();
    let fd = from.as_raw_fd();
    let mut at = 0u64;
    while at < len {
        let data = match sys::seek_data_or_hole(fd, at, true) {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(e) if at == 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                // No SEEK_DATA here: copy everything.
                from.seek(SeekFrom::Start(0))?;
                return io::copy(from, to);
            }
            Err(e) => return Err(e),
        };
        let hole = sys::seek_data_or_hole(fd, data, false)?
            .unwrap_or(len)
            .min(len);
        from.seek(SeekFrom::Start(data))?;
        to.seek(SeekFrom::Start(data))?;
        let n = io::copy(&mut Read::by_ref(from).take(hole - data), to)?;
        if n < hole - data {
            // The file shrank while we copied: keep what was read.
            at = data + n;
            break;
        }
        at = hole;
    }
    to.set_len(len.max(at))?;
    Ok(len.max(at))
}

/// Writes everything `from` gives into the empty file `to`, leaving holes
/// where whole blocks are zeros (a tar entry has no holes of its own; a
/// sparse file written into a layer comes back sparse). Returns the
/// number of bytes the stream had.
pub fn write_stream<R: Read + ?Sized>(from: &mut R, to: &mut File) -> io::Result<u64> {
    let file = to.try_clone()?;
    let mut w = kiln_cache::sparse::HoleWriter::with_capacity(64 * 1024, file);
    let n = io::copy(from, &mut w)?;
    w.into_inner()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    /// A file of `len` bytes with data at these offsets.
    fn sparse_file(path: &std::path::Path, len: u64, data: &[(u64, &[u8])]) {
        let mut f = File::create(path).unwrap();
        f.set_len(len).unwrap();
        for (at, bytes) in data {
            f.seek(SeekFrom::Start(*at)).unwrap();
            f.write_all(bytes).unwrap();
        }
    }

    fn allocated(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn a_copy_keeps_the_bytes_and_the_holes() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        let len = 256 << 20;
        sparse_file(
            &src,
            len,
            &[(0, b"head"), (100 << 20, b"middle"), (len - 3, b"end")],
        );
        let mut from = File::open(&src).unwrap();
        let mut to = File::create(&dst).unwrap();
        assert_eq!(copy_file(&mut from, &mut to).unwrap(), len);
        drop(to);
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert!(
            allocated(&dst) < 1 << 20,
            "{} bytes allocated",
            allocated(&dst)
        );
    }

    #[test]
    fn a_file_that_ends_in_a_hole_keeps_its_length() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        sparse_file(&src, 10 << 20, &[(5, b"x")]);
        let mut to = File::create(&dst).unwrap();
        copy_file(&mut File::open(&src).unwrap(), &mut to).unwrap();
        assert_eq!(std::fs::metadata(&dst).unwrap().len(), 10 << 20);
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
    }

    #[test]
    fn a_stream_of_zeros_becomes_holes() {
        let t = tempfile::tempdir().unwrap();
        let dst = t.path().join("dst");
        let mut data = vec![0u8; 64 << 20];
        data[10] = 1;
        data[(32 << 20) + 7] = 2;
        let tail = data.len() - 1;
        data[tail] = 3;
        // A reader that returns odd sizes.
        struct Odd<'a>(&'a [u8]);
        impl Read for Odd<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(1000);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut to = File::create(&dst).unwrap();
        assert_eq!(
            write_stream(&mut Odd(&data), &mut to).unwrap(),
            data.len() as u64
        );
        drop(to);
        assert_eq!(std::fs::read(&dst).unwrap(), data);
        assert!(
            allocated(&dst) < 1 << 20,
            "{} bytes allocated",
            allocated(&dst)
        );
        // Ending in zeros: the length is kept.
        let mut to = File::create(&dst).unwrap();
        write_stream(&mut &[1u8, 0, 0][..], &mut to).unwrap();
        let mut to2 = File::create(t.path().join("z")).unwrap();
        write_stream(&mut &vec![0u8; 3 * 4096][..], &mut to2).unwrap();
        assert_eq!(
            std::fs::metadata(t.path().join("z")).unwrap().len(),
            3 * 4096
        );
        assert_eq!(std::fs::read(&dst).unwrap(), [1, 0, 0]);
    }
}
