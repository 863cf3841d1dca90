//! The guest kernel command line: the config's base line, then what the VMM
//! adds (virtio-mmio device announcements, CPU template arguments).

use crate::layout::CMDLINE_MAX_SIZE;

/// Errors building the command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    /// The result would not fit the kernel's COMMAND_LINE_SIZE.
    #[error("kernel command line is {len} bytes, longer than the kernel's limit of {max}")]
    TooLong { len: usize, max: usize },
    /// A NUL, newline or other control character.
    #[error("kernel command line contains a control character")]
    ControlChar,
}

/// A command line under construction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    line: String,
}

impl Cmdline {
    /// Starts from `base` (whitespace normalised).
    pub fn new(base: &str) -> Result<Self, CmdlineError> {
        let mut c = Cmdline::default();
        c.push(base)?;
        Ok(c)
    }

    /// Appends `args` (one or more space-separated arguments).
    pub fn push(&mut self, args: &str) -> Result<(), CmdlineError> {
        if args
            .chars()
            .any(|c| c.is_control() && c != ' ' && c != '\t')
        {
            return Err(CmdlineError::ControlChar);
        }
        for word in args.split_whitespace() {
            if !self.line.is_empty() {
                self.line.push(' ');
            }
            self.line.push_str(word);
        }
        // The kernel needs the terminating NUL inside its buffer too.
        let len = self.line.len() + 1;
        if len > CMDLINE_MAX_SIZE {
            return Err(CmdlineError::TooLong {
                len,
                max: CMDLINE_MAX_SIZE,
            });
        }
        Ok(())
    }

    /// Whether an argument named `key` (as `key` or `key=...`) is present.
    pub fn has(&self, key: &str) -> bool {
        self.line
            .split(' ')
            .any(|w| w == key || w.strip_prefix(key).is_some_and(|r| r.starts_with('=')))
    }

    /// The line as text.
    pub fn as_str(&self) -> &str {
        &self.line
    }

    /// The bytes the guest reads, NUL-terminated.
    pub fn to_bytes_with_nul(&self) -> Vec<u8> {
        let mut b = self.line.as_bytes().to_vec();
        b.push(0);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_normalised_lines() {
        let mut c = Cmdline::new("  console=ttyS0   reboot=k ").unwrap();
        c.push("virtio_mmio.device=4K@0xd0000000:5").unwrap();
        assert_eq!(
            c.as_str(),
            "console=ttyS0 reboot=k virtio_mmio.device=4K@0xd0000000:5"
        );
        assert_eq!(c.to_bytes_with_nul().last(), Some(&0));
        assert!(c.has("reboot"));
        assert!(c.has("console"));
        assert!(!c.has("cons"));
        assert!(!c.has("panic"));
    }

    #[test]
    fn refuses_too_long_and_control_characters() {
        let long = "a".repeat(CMDLINE_MAX_SIZE);
        assert!(matches!(
            Cmdline::new(&long),
            Err(CmdlineError::TooLong { .. })
        ));
        assert!(Cmdline::new(&"a".repeat(CMDLINE_MAX_SIZE - 1)).is_ok());
        assert_eq!(Cmdline::new("a\nb"), Err(CmdlineError::ControlChar));
        assert_eq!(Cmdline::new("a\0b"), Err(CmdlineError::ControlChar));
    }
}
