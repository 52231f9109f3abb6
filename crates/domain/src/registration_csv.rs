//! The Autopilot registration CSV reader, for bulk import.
//!
//! [`RegistrationCsvReader`] streams over any [`Read`]: bytes are decoded chunk by chunk and
//! rows are parsed char by char, so memory stays bounded (a row holds at most
//! [`MAX_FIELDS`] fields of at most [`MAX_FIELD_BYTES`] each) whatever the file's size.
//!
//! Decisions where the references are silent:
//! - Encoding: a BOM decides (UTF-8, UTF-16LE, UTF-16BE). Without one, a file whose first four
//!   bytes look like ASCII in UTF-16 (`D\0e\0`) is read as UTF-16 without BOM; any other file
//!   is read as UTF-8 until the first byte sequence that is not UTF-8, and as Windows-1252
//!   from that byte on (a warning says where). Everything before that point was valid UTF-8,
//!   so nothing already read is misread unless a Windows-1252 file happens to contain valid
//!   UTF-8 sequences before its first invalid one, which is rare in real text.
//! - U+FEFF is dropped wherever it appears, so BOMs of concatenated files vanish. A UTF-8 BOM
//!   read as Windows-1252 (`ï»¿`) is dropped at the start of a row.
//! - Line breaks are CRLF, LF or a lone CR; a row's `line` is the physical line where it
//!   starts, counting every break (those inside quoted fields too).
//! - Quoting follows RFC 4180, leniently: a quote inside an unquoted field is a literal
//!   character, and text after a closing quote is appended (as Excel does). A quoted field
//!   that grows past the field limit is taken as a runaway quote: the row is reported and
//!   reading resumes at the next line break.
//! - The header is the first non-blank line; it must name a hash column or a serial column.
//!   Unknown columns are ignored with one warning each. A later line that names both a hash
//!   and a serial column, or repeats the first header, is a repeated header: it is skipped
//!   and its column order is used from then on.
//! - Blank lines, and lines of only commas and whitespace, are skipped and not counted.
//! - A row with fewer fields than the header reads the missing ones as empty, unless the hash
//!   column itself is missing; a row with more fields is an error unless the extra ones are
//!   empty (Excel's trailing commas).

use std::collections::HashMap;
use std::io::{self, Read};

use encoding_rs::{Decoder, UTF_16BE, UTF_16LE, WINDOWS_1252};

use crate::hardware_hash::{self, HardwareHash, HashError, trim_value};
use crate::identity::{ClaimKind, Identity, is_placeholder_serial};

/// Longest field accepted, in bytes of UTF-8 (a hash is 4000 characters, a few more with
/// line breaks inside).
pub const MAX_FIELD_BYTES: usize = 16 * 1024;
/// Most fields kept per row; more are counted but not stored.
pub const MAX_FIELDS: usize = 64;
/// How far (in bytes of decoded text) the header is looked for before the file is declared
/// not a CSV.
pub const HEADER_SCAN_BYTES: u64 = 64 * 1024;
/// Longest group tag, assigned user, serial, manufacturer or model accepted by
/// [`validate_row`], in characters.
pub const MAX_VALUE_CHARS: usize = 256;
/// Longest product key accepted by [`validate_row`], in characters.
pub const MAX_PRODUCT_KEY_CHARS: usize = 64;
/// Most warnings kept by a reader.
const MAX_WARNINGS: usize = 100;
const READ_CHUNK: usize = 64 * 1024;

/// The header the error message shows as an example.
const EXPECTED_HEADER: &str = "\"Device Serial Number,Windows Product ID,Hardware Hash\" (optionally followed by \",Group Tag,Assigned User\"; Partner Center's \",Manufacturer name,Device model\")";

/// How the file's bytes were read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    /// UTF-8 without BOM.
    Utf8,
    /// UTF-8 with BOM.
    Utf8Bom,
    /// UTF-16 little-endian (with or without BOM).
    Utf16Le,
    /// UTF-16 big-endian (with or without BOM).
    Utf16Be,
    /// Windows-1252, used from the first byte that is not UTF-8.
    Windows1252,
}

/// A registration column, recognised by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// `Device Serial Number`, `Serial Number`, `SerialNumber`.
    SerialNumber,
    /// `Windows Product ID`, `Product ID`, `ProductKey`.
    ProductKey,
    /// `Hardware Hash`, `HardwareHash`, `Hash`.
    HardwareHash,
    /// `Group Tag`, `GroupTag`, `OrderID`, `Order ID`.
    GroupTag,
    /// `Assigned User`, `AssignedUser`, `User`, `UPN`.
    AssignedUser,
    /// Partner Center's `Manufacturer name` (also `Manufacturer`).
    Manufacturer,
    /// Partner Center's `Device model` (also `Model`).
    Model,
}

const COLUMN_COUNT: usize = 7;

impl Column {
    fn slot(self) -> usize {
        self as usize
    }

    /// The column a header name means: case, spaces, `_` and `-` do not matter.
    pub fn from_header(name: &str) -> Option<Column> {
        let canon: String = name
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect();
        Some(match canon.as_str() {
            "deviceserialnumber" | "serialnumber" => Column::SerialNumber,
            "windowsproductid" | "productid" | "productkey" => Column::ProductKey,
            "hardwarehash" | "hash" => Column::HardwareHash,
            "grouptag" | "orderid" => Column::GroupTag,
            "assigneduser" | "user" | "upn" => Column::AssignedUser,
            "manufacturername" | "manufacturer" => Column::Manufacturer,
            "devicemodel" | "model" => Column::Model,
            _ => return None,
        })
    }

    /// The canonical header name.
    pub fn name(self) -> &'static str {
        match self {
            Column::SerialNumber => "Device Serial Number",
            Column::ProductKey => "Windows Product ID",
            Column::HardwareHash => "Hardware Hash",
            Column::GroupTag => "Group Tag",
            Column::AssignedUser => "Assigned User",
            Column::Manufacturer => "Manufacturer name",
            Column::Model => "Device model",
        }
    }
}

/// One data row of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsvRow {
    /// Physical 1-based line number in the file where the row starts.
    pub line: u64,
    /// `Device Serial Number`, trimmed; None when absent or empty.
    pub serial_number: Option<String>,
    /// `Windows Product ID`.
    pub product_key: Option<String>,
    /// `Hardware Hash` as written (whitespace inside is removed by decoding).
    pub hardware_hash: Option<String>,
    /// `Group Tag`.
    pub group_tag: Option<String>,
    /// `Assigned User`.
    pub assigned_user: Option<String>,
    /// Partner Center's `Manufacturer name`.
    pub manufacturer: Option<String>,
    /// Partner Center's `Device model`.
    pub model: Option<String>,
}

/// What is wrong with one row; the rest of the file is still read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowProblem {
    /// More non-empty fields than header columns.
    #[error(
        "the row has {found} fields but the header has {expected} (a comma inside an unquoted value?)"
    )]
    TooManyFields {
        /// Fields in the row.
        found: usize,
        /// Columns in the header.
        expected: usize,
    },
    /// A field is longer than [`MAX_FIELD_BYTES`].
    #[error("field {column} is longer than {max} bytes", max = MAX_FIELD_BYTES)]
    FieldTooLong {
        /// 1-based field position.
        column: usize,
    },
    /// A quoted field never closes (or is too long to be real).
    #[error(
        "a quoted field opened in field {column} is not closed within {max} bytes; the row was skipped up to the next line break",
        max = MAX_FIELD_BYTES
    )]
    UnterminatedQuote {
        /// 1-based field position.
        column: usize,
    },
    /// The row is too short to reach the hash column.
    #[error(
        "the row has {found} field(s); the Hardware Hash column (field {hash_column}) is missing"
    )]
    MissingHashColumn {
        /// Fields in the row.
        found: usize,
        /// 1-based position of the hash column.
        hash_column: usize,
    },
}

impl RowProblem {
    /// The per-row import error for this problem (801 `InvalidZtdRequestBody`).
    pub fn to_row_error(&self) -> RowError {
        RowError::invalid_request(self.to_string())
    }
}

/// An error from the reader: fatal for the file (`NotARegistrationCsv`, `Io`) or for one row.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The file is not an Autopilot registration CSV; nothing was read from it.
    #[error("not an Autopilot registration CSV: {0}")]
    NotARegistrationCsv(String),
    /// Reading the underlying source failed.
    #[error("reading the file failed: {0}")]
    Io(#[from] io::Error),
    /// One row is malformed; the reader goes on with the next.
    #[error("line {line}: {problem}")]
    Row {
        /// Physical line where the row starts.
        line: u64,
        /// What is wrong.
        problem: RowProblem,
    },
}

impl CsvError {
    /// True for errors after which the reader yields nothing more.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, CsvError::Row { .. })
    }
}

/// The decoding state of the byte stream.
enum Decoding {
    /// Not sniffed yet: the first bytes are gathered here.
    Sniffing(Vec<u8>),
    /// UTF-16 through encoding_rs, which keeps split code units between chunks.
    Utf16(Decoder),
    /// UTF-8 so far; `carry` holds an incomplete sequence split by a chunk boundary.
    Utf8 { carry: Vec<u8> },
    /// Windows-1252 (single byte, so chunks decode independently).
    Windows1252,
}

/// Decoded characters, produced chunk by chunk from the byte source.
struct CharSource<R> {
    inner: R,
    decoding: Decoding,
    encoding: Option<TextEncoding>,
    buf: Vec<u8>,
    text: String,
    pos: usize,
    eof: bool,
    /// Bytes taken from `inner` so far.
    bytes_in: u64,
    /// Decoding warnings (the switch to Windows-1252).
    warnings: Vec<String>,
}

impl<R: Read> CharSource<R> {
    fn new(inner: R) -> Self {
        CharSource {
            inner,
            decoding: Decoding::Sniffing(Vec::new()),
            encoding: None,
            buf: vec![0; READ_CHUNK],
            text: String::new(),
            pos: 0,
            eof: false,
            bytes_in: 0,
            warnings: Vec::new(),
        }
    }

    fn read_chunk(&mut self) -> io::Result<usize> {
        loop {
            match self.inner.read(&mut self.buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The next decoded character, or None at the end of the input.
    fn next_char(&mut self) -> io::Result<Option<char>> {
        while self.pos >= self.text.len() {
            if self.eof {
                return Ok(None);
            }
            self.refill()?;
        }
        let c = self.text[self.pos..].chars().next();
        if let Some(c) = c {
            self.pos += c.len_utf8();
        }
        Ok(c)
    }

    /// Reads one chunk and decodes it into `text` (which may stay empty, e.g. while sniffing).
    fn refill(&mut self) -> io::Result<()> {
        self.text.clear();
        self.pos = 0;
        let n = self.read_chunk()?;
        let last = n == 0;
        let chunk_start = self.bytes_in;
        self.bytes_in += n as u64;
        let chunk = std::mem::take(&mut self.buf);
        let result = self.decode(&chunk[..n], last, chunk_start);
        self.buf = chunk;
        if last {
            self.eof = true;
        }
        result
    }

    fn decode(&mut self, bytes: &[u8], last: bool, chunk_start: u64) -> io::Result<()> {
        if let Decoding::Sniffing(head) = &mut self.decoding {
            head.extend_from_slice(bytes);
            if head.len() < 4 && !last {
                return Ok(());
            }
            let head = std::mem::take(head);
            let skip = self.choose_encoding(&head);
            return self.decode_with(&head[skip..], last, skip as u64);
        }
        self.decode_with(bytes, last, chunk_start)
    }

    /// Picks the encoding from the first bytes; returns the BOM length to skip.
    fn choose_encoding(&mut self, head: &[u8]) -> usize {
        let (encoding, skip) = match head {
            [0xEF, 0xBB, 0xBF, ..] => (TextEncoding::Utf8Bom, 3),
            [0xFF, 0xFE, ..] => (TextEncoding::Utf16Le, 2),
            [0xFE, 0xFF, ..] => (TextEncoding::Utf16Be, 2),
            [a, 0, b, 0, ..] if *a != 0 && *b != 0 => (TextEncoding::Utf16Le, 0),
            [0, a, 0, b, ..] if *a != 0 && *b != 0 => (TextEncoding::Utf16Be, 0),
            _ => (TextEncoding::Utf8, 0),
        };
        self.decoding = match encoding {
            TextEncoding::Utf16Le => Decoding::Utf16(UTF_16LE.new_decoder_without_bom_handling()),
            TextEncoding::Utf16Be => Decoding::Utf16(UTF_16BE.new_decoder_without_bom_handling()),
            _ => Decoding::Utf8 { carry: Vec::new() },
        };
        self.encoding = Some(encoding);
        skip
    }

    fn decode_with(&mut self, bytes: &[u8], last: bool, chunk_start: u64) -> io::Result<()> {
        match &mut self.decoding {
            Decoding::Sniffing(_) => Ok(()),
            Decoding::Utf16(decoder) => {
                let mut rest = bytes;
                loop {
                    let need = decoder
                        .max_utf8_buffer_length(rest.len())
                        .unwrap_or(rest.len().saturating_mul(3).saturating_add(16));
                    self.text.reserve(need);
                    let (result, read, _) = decoder.decode_to_string(rest, &mut self.text, last);
                    rest = &rest[read..];
                    if result == encoding_rs::CoderResult::InputEmpty {
                        return Ok(());
                    }
                }
            }
            Decoding::Utf8 { carry } => {
                let carried = carry.len() as u64;
                let mut data = std::mem::take(carry);
                data.extend_from_slice(bytes);
                match std::str::from_utf8(&data) {
                    Ok(s) => self.text.push_str(s),
                    Err(e) => {
                        let valid = e.valid_up_to();
                        // Safe split: `valid` is a char boundary by from_utf8's contract.
                        if let Ok(s) = std::str::from_utf8(&data[..valid]) {
                            self.text.push_str(s);
                        }
                        if e.error_len().is_none() && !last {
                            *carry = data[valid..].to_vec();
                        } else {
                            let offset = (chunk_start + valid as u64).saturating_sub(carried);
                            self.switch_to_windows_1252(offset);
                            let (s, _) = WINDOWS_1252.decode_without_bom_handling(&data[valid..]);
                            self.text.push_str(&s);
                        }
                    }
                }
                Ok(())
            }
            Decoding::Windows1252 => {
                let (s, _) = WINDOWS_1252.decode_without_bom_handling(bytes);
                self.text.push_str(&s);
                Ok(())
            }
        }
    }

    fn switch_to_windows_1252(&mut self, offset: u64) {
        self.decoding = Decoding::Windows1252;
        self.encoding = Some(TextEncoding::Windows1252);
        self.warnings.push(format!(
            "the file is not valid UTF-8 from byte {offset} on; it was read as Windows-1252 from there"
        ));
    }
}

/// Column positions of the current header.
#[derive(Debug, Clone)]
struct Header {
    /// Canonical names of the header's fields, to recognise an identical repeat.
    names: Vec<String>,
    /// Field index of each known column.
    slots: [Option<usize>; COLUMN_COUNT],
    /// Number of fields in the header.
    width: usize,
}

impl Header {
    fn index(&self, c: Column) -> Option<usize> {
        self.slots[c.slot()]
    }

    /// The column mapping of a record, with the names it did not recognise and repeats.
    fn from_fields(fields: &[String], width: usize) -> (Header, Vec<String>) {
        let mut slots = [None; COLUMN_COUNT];
        let mut notes = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            let name = trim_value(f);
            match Column::from_header(name) {
                Some(c) if slots[c.slot()].is_none() => slots[c.slot()] = Some(i),
                Some(c) => notes.push(format!(
                    "column {} ({:?}) repeats the {} column; the first one is used",
                    i + 1,
                    shorten(name),
                    c.name()
                )),
                None if name.is_empty() => {}
                None => notes.push(format!(
                    "column {} ({:?}) is not a registration column and is ignored",
                    i + 1,
                    shorten(name)
                )),
            }
        }
        let names = fields
            .iter()
            .map(|f| trim_value(f).to_lowercase())
            .collect();
        (
            Header {
                names,
                slots,
                width,
            },
            notes,
        )
    }

    fn usable(&self) -> bool {
        self.index(Column::HardwareHash).is_some() || self.index(Column::SerialNumber).is_some()
    }
}

/// Shortens text from the file for a message, without control characters.
fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// One physical record before it is mapped to columns.
struct RawRecord {
    line: u64,
    fields: Vec<String>,
    field_count: usize,
    problem: Option<RowProblem>,
}

impl RawRecord {
    fn is_blank(&self) -> bool {
        self.problem.is_none() && self.fields.iter().all(|f| trim_value(f).is_empty())
    }
}

/// Accumulates one record's fields with the size limits applied.
struct RecordBuilder {
    fields: Vec<String>,
    field: String,
    field_count: usize,
    overflow: bool,
    problem: Option<RowProblem>,
}

impl RecordBuilder {
    fn push(&mut self, c: char) {
        if self.field.len() + c.len_utf8() <= MAX_FIELD_BYTES {
            self.field.push(c);
        } else {
            self.overflow = true;
        }
    }

    fn push_str(&mut self, s: &str) {
        if self.field.len() + s.len() <= MAX_FIELD_BYTES {
            self.field.push_str(s);
        } else {
            self.overflow = true;
        }
    }

    fn end_field(&mut self) {
        self.field_count += 1;
        if self.overflow && self.problem.is_none() {
            self.problem = Some(RowProblem::FieldTooLong {
                column: self.field_count,
            });
        }
        self.overflow = false;
        let field = std::mem::take(&mut self.field);
        if self.fields.len() < MAX_FIELDS {
            self.fields.push(field);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    FieldStart,
    Unquoted,
    Quoted,
    QuoteSeen,
    SkipLine,
}

/// A streaming reader of Autopilot registration CSV files; an iterator of rows.
///
/// The first item is `Err(CsvError::NotARegistrationCsv)` when the file has no recognisable
/// header; after a fatal error the iterator ends. Row errors do not end it.
pub struct RegistrationCsvReader<R> {
    src: CharSource<R>,
    /// Physical line of the next character.
    line: u64,
    /// Physical line of the character last returned.
    char_line: u64,
    after_cr: bool,
    consumed: u64,
    header: Option<Header>,
    done: bool,
    rows: u64,
    warnings: Vec<String>,
}

impl<R: Read> RegistrationCsvReader<R> {
    /// A reader over `source`. Nothing is read until the first item is asked for.
    pub fn new(source: R) -> Self {
        RegistrationCsvReader {
            src: CharSource::new(source),
            line: 1,
            char_line: 1,
            after_cr: false,
            consumed: 0,
            header: None,
            done: false,
            rows: 0,
            warnings: Vec::new(),
        }
    }

    /// Data rows read so far (rows and row errors; not headers or blank lines). The caller
    /// enforces its upper bound with this.
    pub fn rows_read(&self) -> u64 {
        self.rows
    }

    /// The physical line (1-based) the reader has reached: after the whole file, the number of
    /// line breaks plus one.
    pub fn lines_read(&self) -> u64 {
        self.line
    }

    /// Bytes taken from the source so far.
    pub fn bytes_read(&self) -> u64 {
        self.src.bytes_in
    }

    /// The encoding in use, once the first bytes were read.
    pub fn encoding(&self) -> Option<TextEncoding> {
        self.src.encoding
    }

    /// The columns of the current header, in file order (unknown columns as None).
    pub fn columns(&self) -> Vec<Option<Column>> {
        let Some(h) = &self.header else {
            return Vec::new();
        };
        (0..h.width)
            .map(|i| {
                [
                    Column::SerialNumber,
                    Column::ProductKey,
                    Column::HardwareHash,
                    Column::GroupTag,
                    Column::AssignedUser,
                    Column::Manufacturer,
                    Column::Model,
                ]
                .into_iter()
                .find(|c| h.index(*c) == Some(i))
            })
            .collect()
    }

    /// File-level warnings so far (unknown or repeated columns, a changed header, the switch
    /// to Windows-1252), each once, at most 100.
    pub fn warnings(&self) -> Vec<String> {
        let mut all = self.warnings.clone();
        all.extend(self.src.warnings.iter().cloned());
        all.truncate(MAX_WARNINGS);
        all
    }

    fn warn(&mut self, message: String) {
        if self.warnings.len() < MAX_WARNINGS && !self.warnings.contains(&message) {
            self.warnings.push(message);
        }
    }

    /// The next character with line breaks normalised to '\n' and U+FEFF dropped.
    fn next_char(&mut self) -> io::Result<Option<char>> {
        loop {
            let Some(c) = self.src.next_char()? else {
                return Ok(None);
            };
            if c == '\u{feff}' {
                continue;
            }
            if self.after_cr {
                self.after_cr = false;
                if c == '\n' {
                    continue;
                }
            }
            self.consumed += c.len_utf8() as u64;
            self.char_line = self.line;
            return Ok(Some(match c {
                '\r' => {
                    self.after_cr = true;
                    self.line += 1;
                    '\n'
                }
                '\n' => {
                    self.line += 1;
                    '\n'
                }
                c => c,
            }));
        }
    }

    /// Copies the run of ordinary characters at the read position into the field in one go
    /// (the hot path: a hash is 4000 characters without a special one). Stops before a line
    /// break, a comma (unquoted) or a quote (quoted), and before any character from U+F000
    /// on, so that U+FEFF is always seen by `next_char`. Returns true when the field is full.
    fn fast_run(&mut self, b: &mut RecordBuilder, state: State) -> bool {
        if self.after_cr {
            return b.overflow;
        }
        let text = &self.src.text[self.src.pos..];
        let stop = text
            .bytes()
            .position(|x| match state {
                State::Unquoted => matches!(x, b',' | b'\r' | b'\n' | 0xEF),
                State::Quoted => matches!(x, b'"' | b'\r' | b'\n' | 0xEF),
                State::SkipLine => matches!(x, b'\r' | b'\n' | 0xEF),
                State::FieldStart | State::QuoteSeen => true,
            })
            .unwrap_or(text.len());
        // `stop` is at an ASCII byte or a UTF-8 lead byte, hence a char boundary.
        if let Some(run) = text.get(..stop)
            && state != State::SkipLine
        {
            b.push_str(run);
        }
        self.src.pos += stop;
        self.consumed += stop as u64;
        b.overflow
    }

    /// Reads one record (one or more physical lines). `limit` bounds the text consumed
    /// while looking for the header.
    fn read_record(&mut self, limit: Option<u64>) -> Result<Option<RawRecord>, CsvError> {
        let Some(mut c) = self.next_char()? else {
            return Ok(None);
        };
        let line = self.char_line;
        let mut b = RecordBuilder {
            fields: Vec::new(),
            field: String::new(),
            field_count: 0,
            overflow: false,
            problem: None,
        };
        let mut state = State::FieldStart;
        loop {
            if let Some(limit) = limit
                && self.consumed > limit
            {
                return Err(CsvError::NotARegistrationCsv(format!(
                    "no header line within the first {} KiB; expected a header such as {EXPECTED_HEADER}",
                    limit / 1024
                )));
            }
            let mut end = false;
            match state {
                State::FieldStart => match c {
                    '"' => state = State::Quoted,
                    ',' => b.end_field(),
                    '\n' => end = true,
                    _ => {
                        b.push(c);
                        state = State::Unquoted;
                    }
                },
                State::Unquoted => match c {
                    ',' => {
                        b.end_field();
                        state = State::FieldStart;
                    }
                    '\n' => end = true,
                    _ => b.push(c),
                },
                State::Quoted => {
                    if c == '"' {
                        state = State::QuoteSeen;
                    } else {
                        b.push(c);
                        if b.overflow {
                            // A runaway quote would swallow the rest of the file: give up on
                            // this row at the next line break instead.
                            b.problem.get_or_insert(RowProblem::UnterminatedQuote {
                                column: b.field_count + 1,
                            });
                            state = if c == '\n' {
                                break;
                            } else {
                                State::SkipLine
                            };
                        }
                    }
                }
                State::QuoteSeen => match c {
                    '"' => {
                        b.push('"');
                        state = State::Quoted;
                    }
                    ',' => {
                        b.end_field();
                        state = State::FieldStart;
                    }
                    '\n' => end = true,
                    _ => {
                        b.push(c);
                        state = State::Unquoted;
                    }
                },
                State::SkipLine => {
                    if c == '\n' {
                        break;
                    }
                }
            }
            if end {
                b.end_field();
                break;
            }
            if matches!(state, State::Unquoted | State::Quoted | State::SkipLine)
                && self.fast_run(&mut b, state)
                && state == State::Quoted
            {
                b.problem.get_or_insert(RowProblem::UnterminatedQuote {
                    column: b.field_count + 1,
                });
                state = State::SkipLine;
                self.fast_run(&mut b, state);
            }
            match self.next_char()? {
                Some(next) => c = next,
                None => {
                    match state {
                        State::SkipLine => {}
                        State::Quoted => {
                            b.problem.get_or_insert(RowProblem::UnterminatedQuote {
                                column: b.field_count + 1,
                            });
                            b.end_field();
                        }
                        _ => b.end_field(),
                    }
                    break;
                }
            }
        }
        if let Some(first) = b.fields.first_mut()
            && let Some(rest) = first.strip_prefix("\u{ef}\u{bb}\u{bf}")
        {
            // A UTF-8 BOM of a concatenated file, read as Windows-1252.
            *first = rest.to_owned();
        }
        Ok(Some(RawRecord {
            line,
            fields: b.fields,
            field_count: b.field_count,
            problem: b.problem,
        }))
    }

    /// Finds and installs the header: the first non-blank record.
    fn read_header(&mut self) -> Result<(), CsvError> {
        loop {
            let Some(record) = self.read_record(Some(HEADER_SCAN_BYTES))? else {
                return Err(CsvError::NotARegistrationCsv(format!(
                    "the file has no header line; expected {EXPECTED_HEADER}"
                )));
            };
            if record.is_blank() {
                continue;
            }
            let (header, notes) = Header::from_fields(&record.fields, record.field_count);
            if record.problem.is_some() || !header.usable() {
                let found: Vec<&str> = record.fields.iter().map(|f| trim_value(f)).collect();
                return Err(CsvError::NotARegistrationCsv(format!(
                    "the first line must be a header such as {EXPECTED_HEADER}, naming at least a Hardware Hash or a Device Serial Number column; found {:?}",
                    shorten(&found.join(","))
                )));
            }
            for n in notes {
                self.warn(n);
            }
            self.header = Some(header);
            return Ok(());
        }
    }

    /// A later record that is a header: it repeats the first header, or names both a hash and
    /// a serial column.
    fn as_repeated_header(&self, record: &RawRecord) -> Option<(Header, Vec<String>)> {
        // Data rows carry a 4000-character hash; only short rows can be headers.
        if record.fields.iter().any(|f| f.len() > 64) {
            return None;
        }
        let (candidate, notes) = Header::from_fields(&record.fields, record.field_count);
        let current = self.header.as_ref()?;
        let identical = candidate.names == current.names;
        let both = candidate.index(Column::HardwareHash).is_some()
            && candidate.index(Column::SerialNumber).is_some();
        (identical || both).then_some((candidate, notes))
    }

    fn step(&mut self) -> Result<Option<CsvRow>, CsvError> {
        if self.header.is_none() {
            self.read_header()?;
        }
        loop {
            let Some(record) = self.read_record(None)? else {
                return Ok(None);
            };
            if record.is_blank() {
                continue;
            }
            if record.problem.is_none()
                && let Some((header, notes)) = self.as_repeated_header(&record)
            {
                let changed = self
                    .header
                    .as_ref()
                    .is_some_and(|h| h.slots != header.slots || h.width != header.width);
                if changed {
                    self.warn(format!(
                        "line {}: a repeated header changes the columns; its order is used from there on",
                        record.line
                    ));
                    for n in notes {
                        self.warn(n);
                    }
                }
                self.header = Some(header);
                continue;
            }
            self.rows += 1;
            return self.to_row(record).map(Some);
        }
    }

    fn to_row(&self, record: RawRecord) -> Result<CsvRow, CsvError> {
        let line = record.line;
        if let Some(problem) = record.problem {
            return Err(CsvError::Row { line, problem });
        }
        let Some(header) = &self.header else {
            return Err(CsvError::NotARegistrationCsv(
                "the file has no header line".to_owned(),
            ));
        };
        if record.field_count > header.width {
            let extra_filled = record.fields[header.width.min(record.fields.len())..]
                .iter()
                .any(|f| !trim_value(f).is_empty());
            if extra_filled || record.field_count > MAX_FIELDS {
                return Err(CsvError::Row {
                    line,
                    problem: RowProblem::TooManyFields {
                        found: record.field_count,
                        expected: header.width,
                    },
                });
            }
        }
        if let Some(h) = header.index(Column::HardwareHash)
            && h >= record.field_count
        {
            return Err(CsvError::Row {
                line,
                problem: RowProblem::MissingHashColumn {
                    found: record.field_count,
                    hash_column: h + 1,
                },
            });
        }
        let get = |c: Column| -> Option<String> {
            let i = header.index(c)?;
            let v = trim_value(record.fields.get(i)?);
            (!v.is_empty()).then(|| v.to_owned())
        };
        Ok(CsvRow {
            line,
            serial_number: get(Column::SerialNumber),
            product_key: get(Column::ProductKey),
            hardware_hash: get(Column::HardwareHash),
            group_tag: get(Column::GroupTag),
            assigned_user: get(Column::AssignedUser),
            manufacturer: get(Column::Manufacturer),
            model: get(Column::Model),
        })
    }
}

impl<R: Read> Iterator for RegistrationCsvReader<R> {
    type Item = Result<CsvRow, CsvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(row)) => Some(Ok(row)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                if e.is_fatal() {
                    self.done = true;
                }
                Some(Err(e))
            }
        }
    }
}

/// A per-row import error with Autopilot's code and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// 801, 802 or 803.
    pub code: u16,
    /// `InvalidZtdRequestBody`, `InvalidZtdHardwareHash` or
    /// `MissingZtdSerialNumberAndProductKey`.
    pub name: &'static str,
    /// What is wrong, for the admin.
    pub message: String,
}

impl RowError {
    /// 801 `InvalidZtdRequestBody`.
    pub fn invalid_request(message: impl Into<String>) -> RowError {
        RowError {
            code: 801,
            name: "InvalidZtdRequestBody",
            message: message.into(),
        }
    }

    /// 802 `InvalidZtdHardwareHash`.
    pub fn invalid_hash(message: impl Into<String>) -> RowError {
        RowError {
            code: HashError::CODE,
            name: HashError::NAME,
            message: message.into(),
        }
    }

    /// 803 `MissingZtdSerialNumberAndProductKey`.
    pub fn missing_serial_and_product_key() -> RowError {
        RowError {
            code: 803,
            name: "MissingZtdSerialNumberAndProductKey",
            message:
                "the row has no Hardware Hash, no Device Serial Number and no Windows Product ID"
                    .to_owned(),
        }
    }
}

/// A row whose hash is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedRow {
    /// Physical line of the row.
    pub line: u64,
    /// The decoded hash (store its `normalized_base64()`).
    pub hash: HardwareHash,
    /// The identity the hash describes.
    pub identity: Identity,
    /// The serial to store: the hash's (record 14), whatever the CSV column says.
    pub serial_number: String,
    /// Things the admin should know that do not stop the row.
    pub warnings: Vec<String>,
    /// `Group Tag`.
    pub group_tag: Option<String>,
    /// `Assigned User`.
    pub assigned_user: Option<String>,
    /// `Windows Product ID`.
    pub product_key: Option<String>,
}

/// A row without a hash that names a full (manufacturer, model, serial) tuple, as Partner
/// Center's uploads do. Whether such a device can be registered (Autopilot answers
/// `ZtdDeviceNotFound` when no hash is on record) is the server's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TupleOnlyRow {
    /// Physical line of the row.
    pub line: u64,
    /// Manufacturer, model and serial, normalised; its tuple key is strong.
    pub identity: Identity,
    /// `Windows Product ID`.
    pub product_key: Option<String>,
    /// `Group Tag`.
    pub group_tag: Option<String>,
    /// `Assigned User`.
    pub assigned_user: Option<String>,
}

/// The result of validating one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOutcome {
    /// A valid hash.
    Valid(Box<ValidatedRow>),
    /// No hash, but a full tuple.
    TupleOnly(TupleOnlyRow),
    /// The row cannot be imported.
    Invalid(RowError),
}

/// Checks a text value of a row: length and control characters.
fn check_value(column: Column, value: &Option<String>, max: usize) -> Result<(), RowError> {
    let Some(v) = value else {
        return Ok(());
    };
    if v.chars().count() > max {
        return Err(RowError::invalid_request(format!(
            "{} is longer than {max} characters",
            column.name()
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(RowError::invalid_request(format!(
            "{} contains a control character",
            column.name()
        )));
    }
    Ok(())
}

fn same_text(a: &str, b: &str) -> bool {
    trim_value(a).to_lowercase() == trim_value(b).to_lowercase()
}

/// Validates one row for import (pure; duplicates and existing registrations are the
/// caller's business):
/// - with a hash: the hash must decode (else 802) and identify the machine by a strong key
///   (a placeholder serial needs a TPM digest, else 802); the hash's serial is stored, with a
///   warning when the CSV's serial, manufacturer or model differ;
/// - without a hash: a full (manufacturer, model, serial) tuple is [`RowOutcome::TupleOnly`];
///   no serial and no product key is 803; anything else is 801;
/// - values longer than [`MAX_VALUE_CHARS`] ([`MAX_PRODUCT_KEY_CHARS`] for the product key)
///   or holding control characters are 801.
pub fn validate_row(row: &CsvRow) -> RowOutcome {
    match validate(row) {
        Ok(outcome) => outcome,
        Err(e) => RowOutcome::Invalid(e),
    }
}

fn validate(row: &CsvRow) -> Result<RowOutcome, RowError> {
    check_value(Column::GroupTag, &row.group_tag, MAX_VALUE_CHARS)?;
    check_value(Column::AssignedUser, &row.assigned_user, MAX_VALUE_CHARS)?;
    check_value(Column::ProductKey, &row.product_key, MAX_PRODUCT_KEY_CHARS)?;
    check_value(Column::SerialNumber, &row.serial_number, MAX_VALUE_CHARS)?;
    check_value(Column::Manufacturer, &row.manufacturer, MAX_VALUE_CHARS)?;
    check_value(Column::Model, &row.model, MAX_VALUE_CHARS)?;

    let Some(text) = row.hardware_hash.as_deref() else {
        return tuple_only(row);
    };
    let hash = hardware_hash::decode(text).map_err(|e| RowError::invalid_hash(e.to_string()))?;
    let identity = Identity::from_hash(&hash);
    if !identity.keys().has_strong_key() {
        return Err(RowError::invalid_hash(format!(
            "the hash's serial number {:?} is an OEM placeholder and the hash has no TPM digest, so it cannot identify the device",
            shorten(hash.serial())
        )));
    }
    let mut warnings = Vec::new();
    if let Some(csv_serial) = &row.serial_number
        && !same_text(csv_serial, hash.serial())
    {
        warnings.push(format!(
            "CSV serial {:?} differs from the hash's serial {:?}; the hash's serial is stored",
            shorten(csv_serial),
            shorten(hash.serial())
        ));
    }
    if let Some(m) = &row.manufacturer
        && !same_text(m, hash.manufacturer())
    {
        warnings.push(format!(
            "CSV manufacturer {:?} differs from the hash's {:?}; the hash's is stored",
            shorten(m),
            shorten(hash.manufacturer())
        ));
    }
    if let Some(m) = &row.model
        && !same_text(m, hash.model().unwrap_or_default())
    {
        warnings.push(format!(
            "CSV model {:?} differs from the hash's {:?}; the hash's is stored",
            shorten(m),
            shorten(hash.model().unwrap_or_default())
        ));
    }
    Ok(RowOutcome::Valid(Box::new(ValidatedRow {
        line: row.line,
        serial_number: hash.serial().to_owned(),
        identity,
        hash,
        warnings,
        group_tag: row.group_tag.clone(),
        assigned_user: row.assigned_user.clone(),
        product_key: row.product_key.clone(),
    })))
}

fn tuple_only(row: &CsvRow) -> Result<RowOutcome, RowError> {
    let (Some(serial), Some(manufacturer), Some(model)) =
        (&row.serial_number, &row.manufacturer, &row.model)
    else {
        if row.serial_number.is_none() && row.product_key.is_none() {
            return Err(RowError::missing_serial_and_product_key());
        }
        return Err(RowError::invalid_request(
            "the row has no Hardware Hash; without one it needs Device Serial Number, Manufacturer name and Device model",
        ));
    };
    let identity = Identity {
        manufacturer: manufacturer.clone(),
        model: model.clone(),
        serial_number: serial.clone(),
        ..Identity::default()
    }
    .normalized()
    .map_err(|e| RowError::invalid_request(e.to_string()))?;
    if is_placeholder_serial(&identity.serial_number) {
        return Err(RowError::invalid_request(format!(
            "the serial number {:?} is an OEM placeholder; without a Hardware Hash it cannot identify the device",
            shorten(serial)
        )));
    }
    Ok(RowOutcome::TupleOnly(TupleOnlyRow {
        line: row.line,
        identity,
        product_key: row.product_key.clone(),
        group_tag: row.group_tag.clone(),
        assigned_user: row.assigned_user.clone(),
    }))
}

/// Finds later rows of the same machine within one file (`ZtdDeviceDuplicated`): rows are
/// the same machine when they share a strong claim (tuple or TPM digest).
#[derive(Debug, Default, Clone)]
pub struct DuplicateTracker {
    first_line: HashMap<(ClaimKind, String), u64>,
}

impl DuplicateTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// When any of `claims` was seen before, the line of that earlier row (this row is the
    /// duplicate and its claims are not recorded); else records them under `line` and
    /// returns None.
    pub fn check(&mut self, line: u64, claims: &[(ClaimKind, String)]) -> Option<u64> {
        if let Some(first) = claims
            .iter()
            .find_map(|(k, v)| self.first_line.get(&(*k, v.clone())))
        {
            return Some(*first);
        }
        for (k, v) in claims {
            self.first_line.insert((*k, v.clone()), line);
        }
        None
    }

    /// Number of claims recorded.
    pub fn len(&self) -> usize {
        self.first_line.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.first_line.is_empty()
    }
}
