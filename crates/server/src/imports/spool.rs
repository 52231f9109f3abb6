//! Streaming an upload to disk. The body's frames are read as they arrive by a blocking thread
//! (a CSV reader, or a streaming JSON parser) that checks the header or structure and counts
//! rows; a writer thread beside it writes them to a file, syncing it as it grows, and hashes
//! them for `Idempotency-Key`. At most [`WRITER_QUEUE`] frames wait in memory. A file
//! that is not a registration CSV, a body over the size limit and a file over the row limit
//! are refused as soon as that is known, without reading the rest.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use unbox_domain::registration_csv::{CsvError, RegistrationCsvReader, TextEncoding};

use super::Format;
use crate::error::ApiError;

/// The bounds of one upload.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_rows: u64,
}

/// An upload on disk, checked.
#[derive(Debug, Clone)]
pub struct Spooled {
    pub byte_size: u64,
    /// SHA-256 (hex) of the format, the dry-run flag and the body.
    pub fingerprint: String,
    pub rows: u64,
    pub encoding: Option<&'static str>,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the upload is larger than {max} bytes")]
    TooLarge { max: u64 },
    #[error("the upload has more than {max} rows")]
    TooManyRows { max: u64 },
    #[error("{0}")]
    NotCsv(String),
    #[error("{0}")]
    InvalidJson(String),
    #[error("the upload was interrupted: {0}")]
    Interrupted(String),
    #[error("spooling the upload failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the upload check failed: {0}")]
    Panicked(#[from] tokio::task::JoinError),
}

impl From<SpoolError> for ApiError {
    fn from(error: SpoolError) -> Self {
        match error {
            SpoolError::TooLarge { max } => ApiError::payload_too_large(format!(
                "the upload is larger than {max} bytes (1 GiB); split the file"
            ))
            .with("maxBytes", max),
            SpoolError::TooManyRows { max } => ApiError::payload_too_large(format!(
                "the upload has more than {max} rows; split the file"
            ))
            .with("maxRows", max),
            SpoolError::NotCsv(message) => ApiError::unprocessable("NotARegistrationCsv", message),
            SpoolError::InvalidJson(message) => ApiError::bad_request(
                "InvalidBody",
                format!("the body is not a batch {{\"devices\": [...]}}: {message}"),
            ),
            SpoolError::Interrupted(message) => ApiError::bad_request(
                "UploadInterrupted",
                format!("the upload ended before its last byte: {message}"),
            ),
            SpoolError::Io(e) => ApiError::internal(e),
            SpoolError::Panicked(e) => ApiError::internal(e),
        }
    }
}

/// The name the job shows for an encoding.
pub fn encoding_name(encoding: TextEncoding) -> &'static str {
    match encoding {
        TextEncoding::Utf8 => "utf-8",
        TextEncoding::Utf8Bom => "utf-8-bom",
        TextEncoding::Utf16Le => "utf-16le",
        TextEncoding::Utf16Be => "utf-16be",
        TextEncoding::Windows1252 => "windows-1252",
    }
}

/// Streams `body` into the file at `path` (created), checking it on the way. On error the
/// file is removed.
pub async fn spool(
    body: Body,
    format: Format,
    dry_run: bool,
    path: PathBuf,
    limits: Limits,
) -> Result<Spooled, SpoolError> {
    let result = spool_inner(body, format, dry_run, path.clone(), limits).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&path).await;
    }
    result
}

async fn spool_inner(
    mut body: Body,
    format: Format,
    dry_run: bool,
    path: PathBuf,
    limits: Limits,
) -> Result<Spooled, SpoolError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let inspector =
        tokio::task::spawn_blocking(move || inspect(format, dry_run, &path, rx, limits.max_rows));
    let mut size = 0u64;
    let mut interrupted = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Err(e) => {
                interrupted = Some(e.to_string());
                break;
            }
            Ok(frame) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                size += data.len() as u64;
                if size > limits.max_bytes {
                    drop(tx);
                    let _ = inspector.await;
                    return Err(SpoolError::TooLarge {
                        max: limits.max_bytes,
                    });
                }
                if tx.send(data).await.is_err() {
                    // The check stopped reading: its result says why.
                    break;
                }
            }
        }
    }
    drop(tx);
    let inspected = inspector.await?;
    if let Some(message) = interrupted {
        return Err(SpoolError::Interrupted(message));
    }
    inspected
}

/// Reads the frames from the channel for the check, handing each to the [`SpoolWriter`] as it
/// passes.
struct Tee {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    pending: Bytes,
    writer: SpoolWriter,
    bytes: u64,
}

impl Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            match self.rx.blocking_recv() {
                Some(data) => {
                    self.writer.send(data.clone())?;
                    self.bytes += data.len() as u64;
                    self.pending = data;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        let head = self.pending.split_to(n);
        buf[..n].copy_from_slice(&head);
        Ok(n)
    }
}

/// Frames the writer thread may hold before the check waits for it.
const WRITER_QUEUE: usize = 512;
/// Written bytes between `fdatasync` calls: the disk writes while the upload still arrives,
/// so the final sync has only the tail left (a 400 MB upload's single sync took 0.1 s).
const SYNC_EVERY: u64 = 64 << 20;

/// A thread of its own that writes the frames to the spool file and hashes them: the check
/// (parsing every row) runs beside it rather than after it, and the file is synced as it
/// grows.
struct SpoolWriter {
    tx: Option<std::sync::mpsc::SyncSender<Bytes>>,
    thread: Option<std::thread::JoinHandle<std::io::Result<String>>>,
}

impl SpoolWriter {
    fn start(file: File, mut hasher: Sha256) -> std::io::Result<SpoolWriter> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(WRITER_QUEUE);
        let thread = std::thread::Builder::new()
            .name("unbox-spool".to_owned())
            .spawn(move || {
                let mut file = BufWriter::with_capacity(1 << 20, file);
                let mut unsynced = 0u64;
                for data in rx {
                    file.write_all(&data)?;
                    hasher.update(&data);
                    unsynced += data.len() as u64;
                    if unsynced >= SYNC_EVERY {
                        file.flush()?;
                        file.get_ref().sync_data()?;
                        unsynced = 0;
                    }
                }
                file.flush()?;
                file.get_ref().sync_all()?;
                Ok(hex::encode(hasher.finalize()))
            })?;
        Ok(SpoolWriter {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    fn send(&mut self, data: Bytes) -> std::io::Result<()> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(data).is_ok());
        if sent {
            return Ok(());
        }
        // The thread stopped: its result says why.
        Err(match self.finish() {
            Err(e) => e,
            Ok(_) => std::io::Error::other("the spool writer stopped"),
        })
    }

    /// Waits until every frame is on disk, synced; the fingerprint (hex SHA-256).
    fn finish(&mut self) -> std::io::Result<String> {
        self.tx = None;
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the spool writer panicked"))),
            None => Err(std::io::Error::other("the spool writer stopped")),
        }
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        // An early refusal: let the thread see the end of the channel and stop.
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn inspect(
    format: Format,
    dry_run: bool,
    path: &Path,
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    max_rows: u64,
) -> Result<Spooled, SpoolError> {
    let mut hasher = Sha256::new();
    hasher.update(format.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(if dry_run { b"dry" } else { b"run" });
    hasher.update([0]);
    let mut tee = Tee {
        rx,
        pending: Bytes::new(),
        writer: SpoolWriter::start(File::create(path)?, hasher)?,
        bytes: 0,
    };
    let (rows, encoding, warnings) = match format {
        Format::Csv => {
            let mut reader = RegistrationCsvReader::new(&mut tee);
            while let Some(item) = reader.next() {
                match item {
                    Ok(_) | Err(CsvError::Row { .. }) => {
                        if reader.rows_read() > max_rows {
                            return Err(SpoolError::TooManyRows { max: max_rows });
                        }
                    }
                    Err(CsvError::NotARegistrationCsv(message)) => {
                        return Err(SpoolError::NotCsv(message));
                    }
                    Err(CsvError::Io(e)) => return Err(SpoolError::Io(e)),
                }
            }
            let encoding = reader.encoding().map(encoding_name);
            (reader.rows_read(), encoding, reader.warnings())
        }
        Format::Json => {
            let mut over = false;
            let counted = super::prepare::count_batch(
                BufReader::with_capacity(64 * 1024, &mut tee),
                |index, _| {
                    if index.unsigned_abs() >= max_rows {
                        over = true;
                        return Err("too many devices".to_owned());
                    }
                    Ok(())
                },
            );
            match counted {
                _ if over => return Err(SpoolError::TooManyRows { max: max_rows }),
                Ok(count) => (count.unsigned_abs(), None, Vec::new()),
                Err(e) if e.is_io() => {
                    return Err(SpoolError::Io(std::io::Error::other(e.to_string())));
                }
                Err(e) => return Err(SpoolError::InvalidJson(e.to_string())),
            }
        }
    };
    // Whatever the reader left (nothing, normally) still belongs to the file.
    std::io::copy(&mut tee, &mut std::io::sink())?;
    let fingerprint = tee.writer.finish()?;
    Ok(Spooled {
        byte_size: tee.bytes,
        fingerprint,
        rows,
        encoding,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    async fn run(format: Format, text: &[u8], limits: Limits) -> Result<Spooled, SpoolError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload.partial");
        let body = Body::from(text.to_vec());
        let result = spool(body, format, false, path.clone(), limits).await;
        match &result {
            Ok(s) => assert_eq!(std::fs::read(&path).unwrap().len() as u64, s.byte_size),
            Err(_) => assert!(!path.exists(), "a refused upload leaves no file"),
        }
        result
    }

    const ROOMY: Limits = Limits {
        max_bytes: 1 << 20,
        max_rows: 10,
    };

    #[tokio::test]
    async fn counts_rows_and_keeps_every_byte() {
        let csv = b"Device Serial Number,Windows Product ID,Hardware Hash\r\nA,,\r\n\r\nB,,\r\n";
        let s = run(Format::Csv, csv, ROOMY).await.unwrap();
        assert_eq!(s.rows, 2);
        assert_eq!(s.byte_size, csv.len() as u64);
        assert_eq!(s.encoding, Some("utf-8"));
        let json = br#"{"devices": [{}, {"serialNumber": "x"}, []]}"#;
        let s = run(Format::Json, json, ROOMY).await.unwrap();
        assert_eq!(s.rows, 3);
    }

    #[tokio::test]
    async fn the_limits_refuse_the_upload() {
        let small = Limits {
            max_bytes: 64,
            max_rows: 2,
        };
        let mut big = b"Device Serial Number,Windows Product ID,Hardware Hash\n".to_vec();
        big.extend(b"A,,\n".repeat(40));
        assert!(matches!(
            run(Format::Csv, &big, small).await,
            Err(SpoolError::TooLarge { max: 64 })
        ));
        let rows = b"Hardware Hash\nA\nB\nC\n";
        assert!(matches!(
            run(Format::Csv, rows, small).await,
            Err(SpoolError::TooManyRows { max: 2 })
        ));
        let json = br#"{"devices": [1, 2, 3]}"#;
        assert!(matches!(
            run(Format::Json, json, small).await,
            Err(SpoolError::TooManyRows { max: 2 })
        ));
    }

    #[tokio::test]
    async fn files_that_are_not_uploads_are_refused() {
        assert!(matches!(
            run(Format::Csv, b"name,age\nbob,3\n", ROOMY).await,
            Err(SpoolError::NotCsv(_))
        ));
        assert!(matches!(
            run(Format::Csv, b"", ROOMY).await,
            Err(SpoolError::NotCsv(_))
        ));
        for bad in [
            &br#"{"devices": [1, 2"#[..],
            br#"{"things": []}"#,
            br#"[1, 2]"#,
            br#"{"devices": []} trailing"#,
        ] {
            assert!(matches!(
                run(Format::Json, bad, ROOMY).await,
                Err(SpoolError::InvalidJson(_))
            ));
        }
    }

    #[tokio::test]
    async fn the_fingerprint_covers_format_flag_and_body() {
        let dir = tempfile::tempdir().unwrap();
        let csv = b"Hardware Hash\nA\n".to_vec();
        let mut prints = Vec::new();
        for dry in [false, true] {
            let path = dir.path().join(format!("f{dry}"));
            let s = spool(Body::from(csv.clone()), Format::Csv, dry, path, ROOMY)
                .await
                .unwrap();
            prints.push(s.fingerprint);
        }
        assert_ne!(prints[0], prints[1]);
    }
}
