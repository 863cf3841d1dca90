//! Signal names and numbers as `runm kill` accepts them (like runc: `TERM`,
//! `SIGTERM`, `sigterm`, `15`, `RTMIN+2`). The number is what the guest agent
//! delivers inside the VM, where the signal numbers are Linux x86_64's too.

/// Errors parsing a signal.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignalError {
    /// Not a signal name or number runm knows.
    #[error("unknown signal '{0}' (give a name like TERM or SIGKILL, or a number 1-64)")]
    Unknown(String),
}

/// Linux x86_64 signal names without the `SIG` prefix, with their numbers.
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];

const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// Parses a signal name (with or without `SIG`, any case) or number.
pub fn parse_signal(s: &str) -> Result<i32, SignalError> {
    let unknown = || SignalError::Unknown(s.to_string());
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return if (1..=SIGRTMAX).contains(&n) {
            Ok(n)
        } else {
            Err(unknown())
        };
    }
    let upper = t.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = SIGNALS.iter().find(|(k, _)| *k == name) {
        return Ok(n);
    }
    let offset = |rest: &str| -> Option<i32> {
        if rest.is_empty() {
            return Some(0);
        }
        let (sign, digits) = rest.split_at(1);
        let v: i32 = digits.parse().ok()?;
        match sign {
            "+" => Some(v),
            "-" => Some(-v),
            _ => None,
        }
    };
    let rt = if let Some(rest) = name.strip_prefix("RTMIN") {
        offset(rest).map(|o| SIGRTMIN + o)
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        offset(rest).map(|o| SIGRTMAX + o)
    } else {
        None
    };
    match rt {
        Some(n) if (SIGRTMIN..=SIGRTMAX).contains(&n) => Ok(n),
        _ => Err(unknown()),
    }
}

/// `SIGTERM` for 15, `SIGRTMIN+2` for 36, `signal 99` otherwise.
pub fn signal_name(n: i32) -> String {
    if let Some((k, _)) = SIGNALS.iter().find(|(_, v)| *v == n) {
        return format!("SIG{k}");
    }
    if (SIGRTMIN..=SIGRTMAX).contains(&n) {
        return format!("SIGRTMIN+{}", n - SIGRTMIN);
    }
    format!("signal {n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_prefixes() {
        assert_eq!(parse_signal("TERM"), Ok(15));
        assert_eq!(parse_signal("SIGTERM"), Ok(15));
        assert_eq!(parse_signal("sigkill"), Ok(9));
        assert_eq!(parse_signal("kill"), Ok(9));
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal("64"), Ok(64));
        assert_eq!(parse_signal("USR1"), Ok(libc::SIGUSR1));
        assert_eq!(parse_signal("SIGWINCH"), Ok(libc::SIGWINCH));
        assert_eq!(parse_signal("RTMIN"), Ok(34));
        assert_eq!(parse_signal("SIGRTMIN+3"), Ok(37));
        assert_eq!(parse_signal("RTMAX-1"), Ok(63));
        for (name, n) in SIGNALS {
            assert_eq!(parse_signal(name), Ok(*n));
        }
        assert_eq!(libc::SIGTERM, 15);
        assert_eq!(libc::SIGSYS, 31);
    }

    #[test]
    fn unknown_signals_are_errors() {
        for bad in [
            "", "0", "65", "-1", "SIGFOO", "FOO", "RTMIN+31", "RTMAX+1", "RTMINx", "SIG",
        ] {
            assert_eq!(
                parse_signal(bad),
                Err(SignalError::Unknown(bad.to_string())),
                "{bad:?}"
            );
        }
        assert!(parse_signal("SIGFOO")
            .unwrap_err()
            .to_string()
            .contains("unknown signal 'SIGFOO'"));
    }

    #[test]
    fn names_for_messages() {
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(6), "SIGABRT");
        assert_eq!(signal_name(36), "SIGRTMIN+2");
        assert_eq!(signal_name(99), "signal 99");
    }
}
