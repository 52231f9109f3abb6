//! Where a command reads and writes: the process's standard streams, or buffers a test reads.
//!
//! Results go to stdout; errors, notes and progress bars go to stderr, so that stdout can be
//! piped (`unbox hwid --format csv > machine.csv`, `unbox devices list -o json | jq`).

use std::io::{IsTerminal, Read, Write};
use std::sync::{Arc, Mutex};

/// A writer several owners share (the command and a progress bar's drawing thread).
#[derive(Clone)]
pub struct SharedWriter(Arc<Mutex<Box<dyn Write + Send>>>);

impl std::fmt::Debug for SharedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedWriter")
    }
}

impl SharedWriter {
    pub fn new(inner: Box<dyn Write + Send>) -> Self {
        Self(Arc::new(Mutex::new(inner)))
    }

    fn with<T>(&self, f: impl FnOnce(&mut dyn Write) -> std::io::Result<T>) -> std::io::Result<T> {
        let mut guard = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("an output lock was poisoned"))?;
        f(guard.as_mut())
    }
}

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.with(|w| w.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.with(|w| w.flush())
    }
}

/// A buffer whose contents a test reads after the command ran.
#[derive(Debug, Clone, Default)]
pub struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    /// The bytes written so far, as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        self.0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("a buffer lock was poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The streams of one run of `unbox`.
pub struct Io {
    stdout: Box<dyn Write + Send>,
    stderr: SharedWriter,
    stdin: Box<dyn Read + Send>,
    /// Draw progress bars on stderr (true when stderr is a terminal).
    pub progress: bool,
    /// stderr is the process's own (progress bars then measure the terminal).
    process_stderr: bool,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io")
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

/// The captured output of an [`Io::capture`].
#[derive(Debug, Clone, Default)]
pub struct Captured {
    pub stdout: Buffer,
    pub stderr: Buffer,
}

impl Io {
    /// The process's standard streams; progress bars only when stderr is a terminal.
    pub fn std() -> Io {
        Io {
            stdout: Box::new(std::io::stdout()),
            stderr: SharedWriter::new(Box::new(std::io::stderr())),
            stdin: Box::new(std::io::stdin()),
            progress: std::io::stderr().is_terminal(),
            process_stderr: true,
        }
    }

    /// Any streams.
    pub fn new(
        stdout: Box<dyn Write + Send>,
        stderr: Box<dyn Write + Send>,
        stdin: Box<dyn Read + Send>,
        progress: bool,
    ) -> Io {
        Io {
            stdout,
            stderr: SharedWriter::new(stderr),
            stdin,
            progress,
            process_stderr: false,
        }
    }

    /// Buffers for stdout and stderr, and `stdin` as standard input.
    pub fn capture(stdin: impl Into<Vec<u8>>) -> (Io, Captured) {
        let captured = Captured::default();
        let io = Io::new(
            Box::new(captured.stdout.clone()),
            Box::new(captured.stderr.clone()),
            Box::new(std::io::Cursor::new(stdin.into())),
            false,
        );
        (io, captured)
    }

    /// Standard output: results only.
    pub fn out(&mut self) -> &mut dyn Write {
        self.stdout.as_mut()
    }

    /// Standard error: errors, notes and progress.
    pub fn err(&self) -> SharedWriter {
        self.stderr.clone()
    }

    /// Where progress bars draw: nowhere unless `progress`.
    pub(crate) fn progress_target(&self) -> indicatif::ProgressDrawTarget {
        if !self.progress {
            indicatif::ProgressDrawTarget::hidden()
        } else if self.process_stderr {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::term_like(Box::new(ProgressTerm::new(self.err())))
        }
    }

    /// Standard input.
    pub fn input(&mut self) -> &mut dyn Read {
        self.stdin.as_mut()
    }

    /// Writes one line to stderr (a note or a warning; failures to write are ignored, as
    /// there is nowhere left to report them).
    pub fn note(&self, line: &str) {
        let mut err = self.err();
        let _ = writeln!(err, "{line}");
        let _ = err.flush();
    }
}

/// A progress bar's view of stderr, for indicatif.
#[derive(Debug)]
pub(crate) struct ProgressTerm {
    out: SharedWriter,
    width: u16,
}

impl ProgressTerm {
    pub(crate) fn new(out: SharedWriter) -> Self {
        Self { out, width: 80 }
    }

    fn put(&self, text: &str) -> std::io::Result<()> {
        let mut out = self.out.clone();
        out.write_all(text.as_bytes())
    }
}

impl indicatif::TermLike for ProgressTerm {
    fn width(&self) -> u16 {
        self.width
    }

    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}A"))?;
        }
        Ok(())
    }

    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}B"))?;
        }
        Ok(())
    }

    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}C"))?;
        }
        Ok(())
    }

    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        if n > 0 {
            self.put(&format!("\x1b[{n}D"))?;
        }
        Ok(())
    }

    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.put(&format!("{s}\n"))
    }

    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.put(s)
    }

    fn clear_line(&self) -> std::io::Result<()> {
        self.put("\r\x1b[2K")
    }

    fn flush(&self) -> std::io::Result<()> {
        let mut out = self.out.clone();
        out.flush()
    }
}
