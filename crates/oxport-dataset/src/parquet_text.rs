//! The first rows of a UTF-8 string column of a parquet file (the hub stores datasets as parquet:
//! `wikitext-2-raw-v1/train-00000-of-00001.parquet` has one `text` column), read with the `parquet` crate's column
//! reader: no arrow, only the one column, only the row groups needed.

use std::path::Path;

use parquet::basic::Type as PhysicalType;
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::ByteArrayType;
use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::error::{Error, Result, io, regular_file};

/// Values decoded per `read_records` call.
const BATCH_ROWS: usize = 1024;

/// The first `limit` values of the top-level string column `column`, in row order (fewer when the file has fewer
/// rows). A null value or invalid UTF-8 is an error naming the row: Python's join would fail on it too.
pub(crate) fn read_text_column(path: &Path, column: &str, limit: usize) -> Result<Vec<String>> {
    let bad = |msg: String| Error::Calibration {
        path: path.to_path_buf(),
        msg,
    };
    regular_file(path)?;
    let file = std::fs::File::open(path).map_err(io(path))?;
    let reader = SerializedFileReader::new(file)
        .map_err(|e| bad(format!("not a readable parquet file: {e}")))?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let index = (0..schema.num_columns())
        .find(|&i| schema.column(i).path().string() == column)
        .ok_or_else(|| bad(format!("no `{column}` column")))?;
    let descr = schema.column(index);
    if descr.physical_type() != PhysicalType::BYTE_ARRAY || descr.max_rep_level() != 0 {
        return Err(bad(format!(
            "`{column}` is not a string column (it is {:?}, repetition level {})",
            descr.physical_type(),
            descr.max_rep_level()
        )));
    }
    let mut rows = Vec::with_capacity(limit.min(1 << 16));
    for group in 0..reader.num_row_groups() {
        if rows.len() >= limit {
            break;
        }
        let read_error = |e: parquet::errors::ParquetError| {
            bad(format!("row group {group}, column `{column}`: {e}"))
        };
        let group_reader = reader.get_row_group(group).map_err(read_error)?;
        let ColumnReader::ByteArrayColumnReader(mut values) =
            group_reader.get_column_reader(index).map_err(read_error)?
        else {
            return Err(bad(format!("`{column}` is not a byte-array column")));
        };
        read_strings(&mut values, descr.max_def_level(), limit, &mut rows)
            .map_err(|msg| bad(format!("row group {group}, column `{column}`: {msg}")))?;
    }
    Ok(rows)
}

/// Append this row group's values to `rows` until it holds `limit`.
fn read_strings(
    reader: &mut ColumnReaderImpl<ByteArrayType>,
    max_def_level: i16,
    limit: usize,
    rows: &mut Vec<String>,
) -> std::result::Result<(), String> {
    let mut values = Vec::new();
    let mut def_levels = Vec::new();
    while rows.len() < limit {
        values.clear();
        def_levels.clear();
        let want = (limit - rows.len()).min(BATCH_ROWS);
        let levels = (max_def_level > 0).then_some(&mut def_levels);
        let (records, _, _) = reader
            .read_records(want, levels, None, &mut values)
            .map_err(|e| e.to_string())?;
        if records == 0 {
            return Ok(());
        }
        let mut present = values.iter();
        for record in 0..records {
            let row = rows.len();
            if max_def_level > 0 && def_levels.get(record) != Some(&max_def_level) {
                return Err(format!("row {row} is null"));
            }
            let value = present
                .next()
                .ok_or_else(|| format!("row {row}: fewer values than rows"))?;
            let text = std::str::from_utf8(value.data())
                .map_err(|e| format!("row {row} is not UTF-8: {e}"))?;
            rows.push(text.to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by pyarrow as the hub's files are (`fixtures/scripts/calibration_parquet.py`): snappy, dictionary
    /// encoded, an optional `text` column, three row groups of at most 5 rows.
    fn fixture() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/calibration/wikitext-rows.parquet")
    }

    #[test]
    fn reads_pyarrows_string_column_in_row_order_up_to_the_limit() {
        let all = read_text_column(&fixture(), "text", 100).unwrap();
        assert_eq!(all.len(), 12);
        assert_eq!(all[0], "");
        assert_eq!(all[1], " = Valkyria Chronicles III = \n");
        assert!(all[3].contains("戦場のヴァルキュリア3"));
        assert_eq!(all[11], " = = Plot = = \n");
        // Limits inside the first group, on a group boundary and inside a later group.
        for limit in [0, 3, 5, 7] {
            assert_eq!(
                read_text_column(&fixture(), "text", limit).unwrap(),
                all[..limit]
            );
        }
    }

    #[test]
    fn a_missing_column_or_file_is_named() {
        let e = read_text_column(&fixture(), "content", 4)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("wikitext-rows.parquet") && e.contains("no `content` column"),
            "{e}"
        );
        let tmp = tempfile::tempdir().unwrap();
        let bogus = tmp.path().join("bogus.parquet");
        std::fs::write(&bogus, b"PAR1 but not really").unwrap();
        let e = read_text_column(&bogus, "text", 4).unwrap_err().to_string();
        assert!(
            e.contains("bogus.parquet") && e.contains("not a readable parquet file"),
            "{e}"
        );
    }
}
