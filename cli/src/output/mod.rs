//! The one place that prints data on stdout, as an aligned table or as JSON (`--json`).
//! Messages for people go to stderr elsewhere; only data comes through here.

mod recruit;
mod rows;
pub mod views;

use std::io::Write;

use anyhow::Context as _;
use comfy_table::{ColumnConstraint, ContentArrangement, Table, presets};
use serde::Serialize;

pub use rows::{ago, batch_state, task_detail_lines, truncate};

/// How data is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

impl Format {
    pub fn from_json_flag(json: bool) -> Self {
        if json { Self::Json } else { Self::Table }
    }
}

/// Something printed as one table row or one JSON object.
pub trait Listing {
    /// The JSON form.
    type View: Serialize;
    /// Column titles, matching [`Listing::row`].
    const HEADERS: &'static [&'static str];
    fn view(&self) -> Self::View;
    fn row(&self) -> Vec<String>;
}

/// Prints items as a table, or as a JSON array.
pub fn print_list<T: Listing>(items: &[T], format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&items.iter().map(Listing::view).collect::<Vec<_>>()),
        Format::Table => print_table(T::HEADERS, items.iter().map(Listing::row)),
    }
}

/// Prints one item as a one-row table, or as a JSON object.
pub fn print_one<T: Listing>(item: &T, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(&item.view()),
        Format::Table => print_table(T::HEADERS, std::iter::once(item.row())),
    }
}

/// Pretty JSON and a newline on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
    text.push('\n');
    print_text(&text)
}

/// A table without borders, columns separated by two spaces (easy on `awk`); no header
/// line when `headers` is empty.
pub fn print_table(
    headers: &[&str],
    rows: impl Iterator<Item = Vec<String>>,
) -> anyhow::Result<()> {
    let text = render_table(headers, rows);
    print_text(&text)
}

fn render_table(headers: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .add_rows(rows);
    if !headers.is_empty() {
        table.set_header(headers.iter().copied());
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
        column.set_constraint(ColumnConstraint::ContentWidth);
    }
    let mut text: String = table
        .lines()
        .map(|line| line.trim_end().to_owned() + "\n")
        .collect();
    if text.is_empty() {
        text.push('\n');
    }
    text
}

/// Writes to stdout; a reader that went away (`| head`) surfaces as `BrokenPipe`.
pub fn print_text(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_no_borders_and_no_trailing_blanks() {
        let text = render_table(
            &["ID", "NAME"],
            vec![
                vec!["1".to_owned(), "first".to_owned()],
                vec!["12".to_owned(), "x".to_owned()],
            ]
            .into_iter(),
        );
        assert_eq!(text, "ID  NAME\n1   first\n12  x\n");
    }
}
