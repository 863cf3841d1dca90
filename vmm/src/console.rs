//! Where the guest's serial console goes, bounded: a guest that prints
//! without end must not fill the host's disk (often a tmpfs under `/run`).
//!
//! A console file is capped at [`VmConfig::console_max_bytes`]: when a write
//! would pass the cap, the file is cut to a marker line and the newest part
//! of what it held, so it always ends with the guest's latest output.
//!
//! [`VmConfig::console_max_bytes`]: crate::config::VmConfig::console_max_bytes

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;

use crate::config::Console;

/// The line a cut console file starts with.
pub const CUT_MARKER: &[u8] = b"[runm-vmm: console cut to its newest part]\n";

/// An append-only file that never grows past `max` bytes.
pub struct CappedFile {
    file: File,
    size: u64,
    max: u64,
}

impl CappedFile {
    /// Caps `file`, opened for reading and appending, at `max` bytes (at least twice
    /// [`CUT_MARKER`]'s length; `VmConfig::validate` asks for far more).
    pub fn new(file: File, max: u64) -> std::io::Result<Self> {
        let size = file.metadata()?.len();
        let floor = 2 * CUT_MARKER.len() as u64;
        Ok(CappedFile {
            file,
            size,
            max: max.max(floor),
        })
    }

    /// Half the cap, less the marker: what a cut keeps of the old content,
    /// and the most of one write that is kept.
    fn half(&self) -> u64 {
        self.max / 2 - CUT_MARKER.len() as u64
    }

    /// Cuts the file to the marker and its newest `keep` bytes.
    fn cut(&mut self, keep: u64) -> std::io::Result<()> {
        let keep = keep.min(self.size);
        let mut tail = vec![0u8; usize::try_from(keep).unwrap_or(0)];
        self.file.read_exact_at(&mut tail, self.size - keep)?;
        self.file.set_len(0)?;
        self.size = 0;
        self.file.write_all(CUT_MARKER)?;
        self.file.write_all(&tail)?;
        self.size = (CUT_MARKER.len() + tail.len()) as u64;
        Ok(())
    }
}

impl Write for CappedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let half = usize::try_from(self.half()).unwrap_or(usize::MAX);
        // Of one write larger than half the cap only its end is kept.
        let data = &buf[buf.len().saturating_sub(half)..];
        let len = data.len() as u64;
        if self.size.saturating_add(len) > self.max {
            self.cut(self.half())?;
        }
        self.file.write_all(data)?;
        self.size += len;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Opens the console destination: a file (created or appended to) capped at
/// `max_bytes`, the VMM's stdout, or nowhere.
pub fn open(c: &Console, max_bytes: u64) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match c {
        Console::Stdout => Box::new(std::io::LineWriter::new(std::io::stdout())),
        Console::Off => Box::new(std::io::sink()),
        Console::File(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(p)?;
            Box::new(std::io::LineWriter::new(CappedFile::new(f, max_bytes)?))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(max: u64) -> (tempfile::TempDir, std::path::PathBuf, CappedFile) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&p)
            .unwrap();
        let c = CappedFile::new(f, max).unwrap();
        (dir, p, c)
    }

    #[test]
    fn below_the_cap_everything_is_kept() {
        let (_d, p, mut c) = capped(4096);
        c.write_all(b"hello\n").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello\n");
    }

    #[test]
    fn past_the_cap_the_newest_output_is_kept() {
        let (_d, p, mut c) = capped(4096);
        for i in 0..10_000u32 {
            c.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        let text = std::fs::read(&p).unwrap();
        assert!(text.len() <= 4096, "{} bytes", text.len());
        assert!(text.starts_with(CUT_MARKER));
        assert!(text.ends_with(b"line 9999\n"));
        assert!(text.len() > 2048 - CUT_MARKER.len(), "a cut keeps half");
    }

    #[test]
    fn one_huge_write_keeps_its_end() {
        let (_d, p, mut c) = capped(4096);
        let mut big = vec![b'a'; 100_000];
        big.extend_from_slice(b"END\n");
        assert_eq!(c.write(&big).unwrap(), big.len());
        let text = std::fs::read(&p).unwrap();
        assert!(text.len() <= 4096);
        assert!(text.ends_with(b"END\n"));
    }

    #[test]
    fn an_existing_file_over_the_cap_is_cut_on_the_first_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        std::fs::write(&p, vec![b'x'; 10_000]).unwrap();
        let mut out = open(&Console::File(p.clone()), 4096).unwrap();
        out.write_all(b"new\n").unwrap();
        out.flush().unwrap();
        let text = std::fs::read(&p).unwrap();
        assert!(text.len() <= 4096 && text.ends_with(b"xnew\n"));
    }
}
