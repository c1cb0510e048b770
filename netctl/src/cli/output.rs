//! Output shapes shared by the commands: Docker's tables and Docker's indented JSON.
//!
//! Scripts written against docker's output should work against netctl's, so the table layout
//! reproduces Go's `text/tabwriter` as the docker CLI configures it (min cell width 10,
//! padding 3, spaces, last column unpadded) and JSON is indented with 4 spaces.

use std::io::{self, Write};

use serde::Serialize;

/// Docker's tabwriter minimum cell width (padding included).
const MIN_WIDTH: usize = 10;
/// Docker's tabwriter padding after each cell's text.
const PADDING: usize = 3;

/// A table laid out like docker's: a header row, then data rows, all with the same columns.
#[derive(Debug, Clone)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with this header row.
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|cell| (*cell).to_owned()).collect()],
        }
    }

    /// Appends a data row (as many cells as the header has).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The laid-out text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        // Every column but the last is padded, to the widest cell plus padding, at least MIN_WIDTH.
        let widths: Vec<usize> = (0..columns.saturating_sub(1))
            .map(|column| {
                self.rows
                    .iter()
                    .filter_map(|row| row.get(column))
                    .map(|cell| cell.chars().count() + PADDING)
                    .fold(MIN_WIDTH, usize::max)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            for (column, cell) in row.iter().enumerate() {
                out.push_str(cell);
                if let Some(width) = widths.get(column) {
                    let fill = width.saturating_sub(cell.chars().count());
                    out.extend(std::iter::repeat_n(' ', fill));
                }
            }
            out.push('\n');
        }
        out
    }
}

/// An ID as `ls` prints it: the first 12 characters, or all of it with `--no-trunc`.
pub fn display_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_owned()
    } else {
        short_id(id).to_owned()
    }
}

/// The first 12 characters of an ID, as docker's tables show them.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `value` as JSON indented with 4 spaces, like `docker inspect`, with a final newline.
pub fn json_pretty<T: Serialize + ?Sized>(value: &T) -> Result<String, serde_json::Error> {
    let mut buffer = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut buffer, formatter);
    value.serialize(&mut serializer)?;
    buffer.push(b'\n');
    // serde_json only ever writes UTF-8.
    Ok(String::from_utf8_lossy(&buffer).into_owned())
}

/// Writes `text` to stdout; a closed pipe (`netctl ... | head`) is not an error worth a message.
pub fn print(text: &str) {
    let mut stdout = io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_ls_matches_docker_spacing() {
        let mut table = Table::new(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
        table.row(vec![
            "0123456789ab".into(),
            "bridge".into(),
            "bridge".into(),
            "local".into(),
        ]);
        table.row(vec![
            "ba9876543210".into(),
            "second-bridge".into(),
            "bridge".into(),
            "local".into(),
        ]);
        table.row(vec![
            "abcdefabcdef".into(),
            "none".into(),
            "null".into(),
            "local".into(),
        ]);
        assert_eq!(
            table.render(),
            "NETWORK ID     NAME            DRIVER    SCOPE\n\
             0123456789ab   bridge          bridge    local\n\
             ba9876543210   second-bridge   bridge    local\n\
             abcdefabcdef   none            null      local\n"
        );
    }

    #[test]
    fn header_only_table_uses_min_width() {
        // Short cells are padded to 10; "NETWORK ID" gets its 3 spaces of padding.
        let table = Table::new(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
        assert_eq!(table.render(), "NETWORK ID   NAME      DRIVER    SCOPE\n");
    }

    #[test]
    fn empty_cells_are_padded_like_tabwriter() {
        let mut table = Table::new(&["A", "B", "C"]);
        table.row(vec![String::new(), "x".into(), String::new()]);
        assert_eq!(
            table.render(),
            "A         B         C\n          x         \n"
        );
    }

    #[test]
    fn width_counts_characters_not_bytes() {
        let mut table = Table::new(&["NAME", "X"]);
        table.row(vec!["ééééééééé".into(), "y".into()]);
        assert_eq!(table.render(), "NAME        X\nééééééééé   y\n");
    }

    #[test]
    fn short_ids() {
        assert_eq!(short_id(&"a".repeat(64)), "aaaaaaaaaaaa");
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn json_is_indented_with_four_spaces() {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Item {
            name: &'static str,
            labels: std::collections::BTreeMap<String, String>,
            config: Vec<u8>,
        }
        let value = vec![Item {
            name: "bridge",
            labels: Default::default(),
            config: Vec::new(),
        }];
        assert_eq!(
            json_pretty(&value).unwrap(),
            "[\n    {\n        \"Name\": \"bridge\",\n        \"Labels\": {},\n        \"Config\": []\n    }\n]\n"
        );
    }
}
