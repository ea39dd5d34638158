//! The container's log: docker's json-file layout, one JSON object per
//! line of output, lines over 16 KiB split into several records.

use std::fs::File;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{io_err, Result};

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub time_ns: u128,
    /// "stdout" or "stderr".
    pub stream: String,
    pub log: String,
}

/// The largest log record, in bytes of output: docker's json-file driver
/// splits a longer line into records of 16 KiB, so a container printing
/// gigabytes without a newline costs its log writer (and readers) no more
/// than this. A record that does not end in `\n` is a piece of a longer line.
pub const MAX_LOG_RECORD: usize = 16 << 10;

/// The longest line of a log file a reader accepts (a record of
/// [`MAX_LOG_RECORD`] bytes escaped as JSON is at most six times longer);
/// longer lines, which kiln never writes, are skipped unread.
const MAX_LOG_LINE: usize = 8 * MAX_LOG_RECORD;

/// `--log-opt max-size`/`max-file` of the json-file driver: when a record
/// would take the log past `max_size` bytes, the log is rotated (`log` to
/// `log.1`, `log.1` to `log.2`, … keeping `max_files` files in all, as
/// docker's json-file does; with one file it is emptied instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rotation {
    pub max_size: u64,
    pub max_files: u32,
}

/// `--log-driver` and `--log-opt` as the container was made with them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// `json-file` (also when empty), `local` (kept as json-file is, with
    /// docker's local defaults: 20 MB, 5 files) or `none` (no log).
    #[serde(default)]
    pub driver: String,
    /// The options as given, for `inspect`.
    #[serde(default)]
    pub opts: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub rotation: Option<Rotation>,
}

impl LogConfig {
    /// The driver's name as `inspect` shows it.
    pub fn driver_name(&self) -> &str {
        if self.driver.is_empty() {
            "json-file"
        } else {
            &self.driver
        }
    }

    /// Whether the container's output is kept (and `kiln logs` can read it).
    pub fn keeps_log(&self) -> bool {
        self.driver != "none"
    }
}

/// The container's log as the helper writes it: whole records, rotated
/// when the container asked for it.
pub struct LogFile {
    file: File,
    path: PathBuf,
    size: u64,
    rotation: Option<Rotation>,
}

impl LogFile {
    /// Opens (or creates) the log at `path` for appending.
    pub fn open(path: &Path, rotation: Option<Rotation>) -> io::Result<LogFile> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile {
            file,
            path: path.to_path_buf(),
            size,
            rotation: rotation.filter(|r| r.max_size > 0),
        })
    }

    /// Appends one record (one write on an O_APPEND file: readers see
    /// whole lines). A write cut short (a full disk) is taken back, so the
    /// log keeps whole records and the next one does not run into a piece.
    fn append(&mut self, record: &[u8]) {
        if let Some(r) = self.rotation {
            if self.size > 0 && self.size + record.len() as u64 > r.max_size {
                self.rotate(r);
            }
        }
        if self.file.write_all(record).is_err() {
            let _ = self.file.set_len(self.size);
        } else {
            self.size += record.len() as u64;
        }
    }

    fn rotate(&mut self, r: Rotation) {
        if r.max_files <= 1 {
            if self.file.set_len(0).is_ok() {
                self.size = 0;
            }
            return;
        }
        for n in (1..r.max_files - 1).rev() {
            let _ = std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1));
        }
        if std::fs::rename(&self.path, rotated(&self.path, 1)).is_err() {
            return;
        }
        // If the new file cannot be made, writing goes on into the renamed
        // one rather than losing output.
        if let Ok(fresh) = Self::open(&self.path, Some(r)) {
            *self = fresh;
        }
    }
}

/// `log.N`, the Nth newest rotated file of the log at `path`.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

/// The rotated files of the log at `path` that exist, oldest first.
fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..)
        .map(|n| rotated(path, n))
        .take_while(|p| p.is_file())
        .collect();
    files.reverse();
    files
}

/// Every entry of the rotated files of the log at `path`, oldest first.
fn for_each_rotated(path: &Path, f: &mut dyn FnMut(LogEntry)) -> Result<()> {
    for old in rotated_files(path) {
        for_each_log(&old, 0, None, &mut *f)?;
    }
    Ok(())
}

/// Streams the complete log entries from byte `offset` on (up to byte `end`
/// when given) to `f`, one at a time, so a log of any size is read in
/// bounded memory; returns the offset after the last complete line (for
/// `logs -f`). A line still being written is left for the next call.
pub fn for_each_log(
    path: &Path,
    offset: u64,
    end: Option<u64>,
    mut f: impl FnMut(LogEntry),
) -> Result<u64> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(offset),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    file.seek(SeekFrom::Start(offset))
        .map_err(io_err("seek", path))?;
    let limit = end.map_or(u64::MAX, |e| e.saturating_sub(offset));
    let mut r = io::BufReader::with_capacity(64 << 10, file.take(limit));
    let mut pos = offset;
    let mut line = Vec::new();
    let mut line_len = 0usize;
    loop {
        let buf = r.fill_buf().map_err(io_err("read", path))?;
        if buf.is_empty() {
            break; // the end, or a line still being written
        }
        let (part, complete) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        line_len += part.len();
        if line_len <= MAX_LOG_LINE {
            line.extend_from_slice(part);
        } else {
            line.clear();
        }
        let used = part.len();
        r.consume(used);
        if complete {
            pos += line_len as u64;
            if line_len <= MAX_LOG_LINE {
                if let Ok(e) = serde_json::from_slice::<LogEntry>(&line) {
                    f(e);
                }
            }
            line.clear();
            line_len = 0;
        }
    }
    Ok(pos)
}

/// Splits output into log records (kept with their newline): a line waits
/// for its end up to [`MAX_LOG_RECORD`] bytes, then goes out in pieces of
/// that size, as docker's logger does.
pub(super) struct LineBuf {
    pub(super) stream: &'static str,
    pub(super) pending: Vec<u8>,
}

impl LineBuf {
    pub(super) fn push(&mut self, mut bytes: &[u8], log: &mut LogFile) {
        while !bytes.is_empty() {
            let room = MAX_LOG_RECORD - self.pending.len();
            let window = &bytes[..bytes.len().min(room)];
            if let Some(i) = window.iter().position(|b| *b == b'\n') {
                self.pending.extend_from_slice(&bytes[..=i]);
                bytes = &bytes[i + 1..];
                let line = std::mem::take(&mut self.pending);
                write_entry(log, self.stream, &line);
                continue;
            }
            self.pending.extend_from_slice(window);
            bytes = &bytes[window.len()..];
            if self.pending.len() >= MAX_LOG_RECORD {
                // Keep a character cut at the end whole for the next record.
                let keep = incomplete_utf8_tail(&self.pending);
                let rest = self.pending.split_off(self.pending.len() - keep);
                let record = std::mem::replace(&mut self.pending, rest);
                write_entry(log, self.stream, &record);
            }
        }
    }

    pub(super) fn flush(&mut self, log: &mut LogFile) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            write_entry(log, self.stream, &line);
        }
    }
}

/// How many bytes at the end of `b` start a UTF-8 character that is not
/// complete yet (0 to 3).
fn incomplete_utf8_tail(b: &[u8]) -> usize {
    let start = b.len().saturating_sub(3);
    let Some(i) = (start..b.len()).rev().find(|&i| b[i] & 0xC0 != 0x80) else {
        return 0;
    };
    let need = match b[i] {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    };
    if b.len() - i < need {
        b.len() - i
    } else {
        0
    }
}

fn write_entry(log: &mut LogFile, stream: &str, bytes: &[u8]) {
    let e = LogEntry {
        time_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        stream: stream.to_string(),
        log: String::from_utf8_lossy(bytes).into_owned(),
    };
    if let Ok(mut v) = serde_json::to_vec(&e) {
        v.push(b'\n');
        log.append(&v);
    }
}

/// Where `kiln logs` sends entries: the caller renders them (to its
/// stdout and stderr, as the container wrote them).
pub trait LogSink {
    /// One entry, in order.
    fn entry(&mut self, e: &LogEntry);
    /// A batch is done: what was written so far should be seen now.
    fn flush(&mut self);
    /// Following should stop after one last read: nothing written from
    /// now on is wanted (`logs -f --until` once that time has passed, as
    /// docker's follower stops at it).
    fn past_end(&self) -> bool {
        false
    }
}

/// `kiln logs`: the container's log (the last `tail` entries when given),
/// streamed to `sink` in bounded memory; with `follow`, new output too
/// until the helper records the end (or is found dead for a while).
pub fn follow_log(
    store: &super::Store,
    id: &str,
    tail: Option<usize>,
    follow: bool,
    sink: &mut dyn LogSink,
) -> Result<()> {
    let path = store.dir_of(id).join("log");
    // The file being read, by its inode: when the helper rotates the log,
    // what is left of the old one is read before the new one.
    let inode = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).ok().map(|m| m.ino())
    };
    let mut reading = inode(&path);
    let mut offset = match tail {
        None => {
            for_each_rotated(&path, &mut |e| sink.entry(&e))?;
            for_each_log(&path, 0, None, |e| sink.entry(&e))?
        }
        Some(n) => {
            // Count first, then print the last n of the entries counted.
            let mut count = 0usize;
            let old = rotated_files(&path);
            for p in &old {
                for_each_log(p, 0, None, |_| count += 1)?;
            }
            let end = for_each_log(&path, 0, None, |_| count += 1)?;
            let mut skip = count.saturating_sub(n);
            let mut take = |e: LogEntry| {
                if skip > 0 {
                    skip -= 1;
                } else {
                    sink.entry(&e);
                }
            };
            for p in &old {
                for_each_log(p, 0, None, &mut take)?;
            }
            for_each_log(&path, 0, Some(end), &mut take)?
        }
    };
    sink.flush();
    if !follow {
        return Ok(());
    }
    // Until the helper records the end (after it has copied the last
    // output); a helper that died without recording it ends this too.
    let mut dead_polls = 0;
    loop {
        // Asked before the read: entries stamped up to now are still read.
        let past_end = sink.past_end();
        let state = store.load(id).ok();
        let recorded_end = state
            .as_ref()
            .is_none_or(|c| c.status != super::Status::Running);
        if state.as_ref().is_some_and(|c| !c.is_alive()) {
            dead_polls += 1;
        }
        let now = inode(&path);
        if now != reading {
            // Rotated (maybe more than once since the last look): the rest
            // of the file we were reading, then the newer rotated ones.
            let olds = rotated_files(&path);
            if let Some(at) = olds
                .iter()
                .position(|p| reading.is_some() && inode(p) == reading)
            {
                for_each_log(&olds[at], offset, None, |e| sink.entry(&e))?;
                for newer in &olds[at + 1..] {
                    for_each_log(newer, 0, None, |e| sink.entry(&e))?;
                }
            }
            reading = now;
            offset = 0;
        } else if std::fs::metadata(&path).is_ok_and(|m| m.len() < offset) {
            // Emptied (one file kept): start again at its beginning.
            offset = 0;
        }
        offset = for_each_log(&path, offset, None, |e| sink.entry(&e))?;
        sink.flush();
        if recorded_end || dead_polls > 20 || past_end {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records are cut at 16 KiB (never inside a character), a line ends a
    /// record, and reading streams them back to the same bytes.
    #[test]
    fn log_records_are_split_at_16_kib_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut log = LogFile::open(&path, None).unwrap();
        let mut lines = LineBuf {
            stream: "stdout",
            pending: Vec::new(),
        };
        let mut written = Vec::new();
        // 100 000 bytes of 3-byte characters in odd-sized reads, then a line.
        let text = "€".repeat(100_000 / 3);
        for chunk in text.as_bytes().chunks(7_001) {
            lines.push(chunk, &mut log);
            assert!(lines.pending.len() < MAX_LOG_RECORD);
        }
        written.extend_from_slice(text.as_bytes());
        lines.push(b"\nshort\n", &mut log);
        written.extend_from_slice(b"\nshort\n");
        lines.flush(&mut log);

        let mut entries = Vec::new();
        let end = for_each_log(&path, 0, None, |e| entries.push(e)).unwrap();
        assert_eq!(end, std::fs::metadata(&path).unwrap().len());
        assert!(entries.iter().all(|e| e.log.len() <= MAX_LOG_RECORD));
        assert!(entries.iter().all(|e| !e.log.contains('\u{FFFD}')));
        assert_eq!(entries.iter().filter(|e| e.log.ends_with('\n')).count(), 2);
        let back: String = entries.iter().map(|e| e.log.as_str()).collect();
        assert_eq!(back.as_bytes(), written.as_slice());
        // From an offset, and only up to an end.
        let mut n = 0;
        for_each_log(&path, 0, Some(end - 1), |_| n += 1).unwrap();
        assert_eq!(n, entries.len() - 1);
    }

    /// With max-size and max-file, the log turns over into `log.1`,
    /// `log.2`… keeping that many files, each under the size; reading the
    /// rotated files then the log gives the newest entries in order.
    #[test]
    fn rotation_keeps_max_files_under_max_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let rotation = Rotation {
            max_size: 1000,
            max_files: 3,
        };
        let mut log = LogFile::open(&path, Some(rotation)).unwrap();
        let mut lines = LineBuf {
            stream: "stdout",
            pending: Vec::new(),
        };
        for i in 0..200 {
            lines.push(format!("line {i}\n").as_bytes(), &mut log);
        }
        for p in [&path, &rotated(&path, 1), &rotated(&path, 2)] {
            let len = std::fs::metadata(p).unwrap().len();
            assert!(len > 0 && len <= 1000, "{}: {len}", p.display());
        }
        assert!(!rotated(&path, 3).exists(), "three files in all");
        let mut seen = Vec::new();
        for_each_rotated(&path, &mut |e| seen.push(e.log)).unwrap();
        for_each_log(&path, 0, None, |e| seen.push(e.log)).unwrap();
        assert_eq!(seen.last().map(String::as_str), Some("line 199\n"));
        let first: usize = seen[0].trim_start_matches("line ").trim().parse().unwrap();
        let want: Vec<String> = (first..200).map(|i| format!("line {i}\n")).collect();
        assert_eq!(
            seen, want,
            "the newest entries, in order, none lost between files"
        );

        // One file: emptied instead of rotated.
        let one = dir.path().join("one");
        let mut log = LogFile::open(
            &one,
            Some(Rotation {
                max_size: 500,
                max_files: 1,
            }),
        )
        .unwrap();
        for i in 0..100 {
            lines.push(format!("line {i}\n").as_bytes(), &mut log);
        }
        assert!(std::fs::metadata(&one).unwrap().len() <= 500);
        assert!(!rotated(&one, 1).exists());
    }
}
