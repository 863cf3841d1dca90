//! A newc ("070701") cpio writer: the initramfs format the Linux kernel
//! unpacks. Built in memory, so device nodes need no privilege and no
//! `cpio` program is needed. Uncompressed, because a guest under emulation
//! unpacks compressed images slowly.

/// File type bits of `st_mode`.
const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// An archive being written: add members, then [`Cpio::finish`].
#[derive(Default)]
pub struct Cpio {
    data: Vec<u8>,
    ino: u32,
}

impl Cpio {
    /// An empty archive.
    pub fn new() -> Self {
        Cpio::default()
    }

    fn pad4(&mut self) {
        self.data.resize(self.data.len().next_multiple_of(4), 0);
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), body: &[u8]) {
        self.ino += 1;
        // Names and members of test images are small; a field that does
        // not fit would make a corrupt archive, so refuse it loudly.
        let namesize = u32::try_from(name.len() + 1).expect("cpio member name under 4 GiB");
        let filesize = u32::try_from(body.len()).expect("cpio member under 4 GiB");
        let nlink = if mode & S_IFMT == S_IFDIR { 2 } else { 1 };
        // ino, mode, uid, gid, nlink, mtime, filesize, dev major/minor,
        // rdev major/minor, namesize, check.
        let fields = [
            self.ino, mode, 0, 0, nlink, 0, filesize, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        self.data.extend_from_slice(b"070701");
        for f in fields {
            self.data.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.data.extend_from_slice(name.as_bytes());
        self.data.push(0);
        self.pad4();
        self.data.extend_from_slice(body);
        self.pad4();
    }

    /// A directory with permission bits `perm` (e.g. `0o755`, `0o1777`).
    pub fn dir(&mut self, name: &str, perm: u32) -> &mut Self {
        self.entry(name, S_IFDIR | perm, (0, 0), &[]);
        self
    }

    /// A regular file with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, body: &[u8]) -> &mut Self {
        self.entry(name, S_IFREG | perm, (0, 0), body);
        self
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, S_IFLNK | 0o777, (0, 0), target.as_bytes());
        self
    }

    /// A character device node (mode 0600).
    pub fn char_dev(&mut self, name: &str, major: u32, minor: u32) -> &mut Self {
        self.entry(name, S_IFCHR | 0o600, (major, minor), &[]);
        self
    }

    /// The archive with its trailer, padded to 512-byte blocks as cpio
    /// writes it.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.data.resize(self.data.len().next_multiple_of(512), 0);
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_follow_the_newc_layout() {
        let mut c = Cpio::new();
        c.file("init", 0o755, b"abc");
        let a = c.finish();
        assert_eq!(&a[..6], b"070701");
        // ino 1, mode 0100755, uid, gid, nlink 1, mtime, filesize 3
        assert_eq!(&a[6..14], b"00000001");
        assert_eq!(&a[14..22], b"000081ed");
        assert_eq!(&a[38..46], b"00000001");
        assert_eq!(&a[54..62], b"00000003");
        assert_eq!(&a[94..102], b"00000005", "namesize counts the NUL");
        // 110-byte header + "init\0" = 115, padded to 116, then the body.
        assert_eq!(&a[110..115], b"init\0");
        assert_eq!(&a[116..119], b"abc");
        let trailer = a.windows(10).position(|w| w == b"TRAILER!!!").unwrap();
        assert_eq!(trailer, 120 + 110, "the trailer follows the padded body");
        assert_eq!(a.len() % 512, 0);
    }

    #[test]
    fn directories_links_and_devices_carry_their_type_and_numbers() {
        let mut c = Cpio::new();
        c.dir("tmp", 0o1777)
            .symlink("bin/sh", "busybox")
            .char_dev("dev/console", 5, 1);
        let a = c.finish();
        // Member 1: a directory with the sticky bit and two links.
        assert_eq!(&a[14..22], b"000043ff");
        assert_eq!(&a[38..46], b"00000002");
        // Member 2 starts after 110 + "tmp\0" (4) = 114, padded to 116: a
        // link whose body is its target.
        let m2 = 116;
        assert_eq!(&a[m2 + 14..m2 + 22], b"0000a1ff");
        assert_eq!(&a[m2 + 54..m2 + 62], b"00000007");
        // 110 + "bin/sh\0" (7) = 117, padded to 120, then the target.
        assert_eq!(&a[m2 + 120..m2 + 127], b"busybox");
        // Member 3 after the target padded to 8 bytes.
        let m3 = m2 + 120 + 8;
        assert_eq!(&a[m3 + 14..m3 + 22], b"00002180");
        assert_eq!(&a[m3 + 78..m3 + 94], b"0000000500000001", "rdev 5:1");
    }
}
