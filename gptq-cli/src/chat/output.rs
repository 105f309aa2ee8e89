//! Stdout of a session at a terminal, tracking whether the cursor is at the
//! start of a line (so that the next prompt starts on its own line).

use std::io::Write;

/// Stdout, remembering whether the cursor is at the start of a line.
pub struct Tracked {
    inner: std::io::Stdout,
    /// The last byte written was a newline (or nothing was written yet).
    pub at_line_start: bool,
}

impl Tracked {
    /// Stdout, at the start of a line.
    pub fn stdout() -> Tracked {
        Tracked {
            inner: std::io::stdout(),
            at_line_start: true,
        }
    }

    /// Ends the current line unless it is empty.
    pub fn line_start(&mut self) -> std::io::Result<()> {
        if !self.at_line_start {
            self.write_all(b"\n")?;
        }
        self.flush()
    }
}

impl Write for Tracked {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if n > 0 {
            self.at_line_start = buf[n - 1] == b'\n';
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
