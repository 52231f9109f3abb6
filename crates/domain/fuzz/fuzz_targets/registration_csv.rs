//! The CSV reader must never panic, whatever the bytes and however they are split into reads,
//! and its row line numbers must strictly increase.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use unbox_domain::registration_csv::{CsvError, RegistrationCsvReader, validate_row};

/// Hands out the input in reads of `step` bytes, to move chunk boundaries around.
struct Chunked<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(first % 8) + 1;
    let reader = RegistrationCsvReader::new(Chunked { data: rest, step });
    let whole = RegistrationCsvReader::new(rest);
    let a = run(reader);
    let b = run(whole);
    assert_eq!(
        a, b,
        "the result must not depend on how the input is split into reads"
    );
});

/// Reads everything and returns (line, ok) per item.
fn run<R: Read>(mut reader: RegistrationCsvReader<R>) -> Vec<(u64, bool)> {
    let mut out = Vec::new();
    let mut last = 0;
    for item in reader.by_ref() {
        match item {
            Ok(row) => {
                assert!(row.line > last, "lines must increase");
                last = row.line;
                let _ = validate_row(&row);
                out.push((row.line, true));
            }
            Err(CsvError::Row { line, problem }) => {
                assert!(line > last, "lines must increase");
                last = line;
                let _ = problem.to_row_error();
                out.push((line, false));
            }
            Err(_) => out.push((0, false)),
        }
    }
    assert_eq!(
        reader.rows_read(),
        out.iter().filter(|(l, _)| *l > 0).count() as u64
    );
    out
}
