//! A small document model (headings, paragraphs, tables, figures) written
//! out twice from the same blocks: as Markdown (figures as links to their
//! SVG files) and as one self-contained HTML page (figures inline).

/// A table: header cells and rows of cells (plain text; `|` and HTML
/// special characters are escaped by the writers).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Column headers.
    pub header: Vec<String>,
    /// Rows, each as long as the header.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with `header`.
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row (padded or cut to the header's width).
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }
}

/// One block of the document.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A heading of level 1-3.
    Heading(u8, String),
    /// A paragraph (may hold `**bold**` and `` `code` ``, kept as-is in
    /// Markdown and turned into tags in HTML).
    Para(String),
    /// A warning box (a block quote in Markdown).
    Warning(String),
    /// A bullet list.
    List(Vec<String>),
    /// A table with a caption line under it.
    Table(Table, String),
    /// An SVG figure: file name, SVG text, caption.
    Figure(String, String, String),
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The document as Markdown.
pub fn markdown(blocks: &[Block]) -> String {
    let mut out = String::new();
    for b in blocks {
        match b {
            Block::Heading(level, text) => {
                out.push_str(&"#".repeat(usize::from(*level)));
                out.push(' ');
                out.push_str(text);
                out.push_str("\n\n");
            }
            Block::Para(text) => {
                out.push_str(text);
                out.push_str("\n\n");
            }
            Block::Warning(text) => {
                out.push_str("> **");
                out.push_str(text);
                out.push_str("**\n\n");
            }
            Block::List(items) => {
                for i in items {
                    out.push_str("- ");
                    out.push_str(i);
                    out.push('\n');
                }
                out.push('\n');
            }
            Block::Table(t, caption) => {
                out.push_str("| ");
                out.push_str(
                    &t.header
                        .iter()
                        .map(|h| md_cell(h))
                        .collect::<Vec<_>>()
                        .join(" | "),
                );
                out.push_str(" |\n|");
                out.push_str(&" --- |".repeat(t.header.len()));
                out.push('\n');
                for r in &t.rows {
                    out.push_str("| ");
                    out.push_str(&r.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | "));
                    out.push_str(" |\n");
                }
                if !caption.is_empty() {
                    out.push_str("\n*");
                    out.push_str(caption);
                    out.push_str("*\n");
                }
                out.push('\n');
            }
            Block::Figure(file, _, caption) => {
                // The alt text is the caption's first part; the host line
                // follows it in the caption under the figure.
                let alt = caption.split(';').next().unwrap_or(caption);
                out.push_str(&format!("![{alt}]({file})\n\n*{caption}*\n\n"));
            }
        }
    }
    out
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Escaped text with the paragraphs' `` `code` `` and `**bold**` as tags.
fn inline(s: &str) -> String {
    let e = esc(s);
    let mut out = String::new();
    let mut code = false;
    let mut bold = false;
    let mut rest = e.as_str();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("**").filter(|_| !code) {
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
            rest = r;
        } else if let Some(r) = rest.strip_prefix('`') {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
            rest = r;
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if code {
        out.push_str("</code>");
    }
    if bold {
        out.push_str("</strong>");
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;\
color:#222;line-height:1.4}table{border-collapse:collapse;margin:.5rem 0}\
td,th{border:1px solid #bbb;padding:.25rem .5rem;vertical-align:top;font-size:.92rem}\
th{background:#eee}.cap{font-style:italic;color:#555;font-size:.85rem;margin-bottom:1.5rem}\
.warn{border-left:.4rem solid #c60;background:#fff4e5;padding:.6rem 1rem;font-weight:bold}\
figure{margin:1rem 0}code{background:#f3f3f3;padding:0 .2rem}";

/// The document as one HTML page: styles and SVGs inline, nothing fetched.
pub fn html(title: &str, blocks: &[Block]) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n",
        esc(title)
    );
    for b in blocks {
        match b {
            Block::Heading(level, text) => {
                out.push_str(&format!("<h{level}>{}</h{level}>\n", inline(text)));
            }
            Block::Para(text) => out.push_str(&format!("<p>{}</p>\n", inline(text))),
            Block::Warning(text) => {
                out.push_str(&format!("<div class=\"warn\">{}</div>\n", inline(text)));
            }
            Block::List(items) => {
                out.push_str("<ul>");
                for i in items {
                    out.push_str(&format!("<li>{}</li>", inline(i)));
                }
                out.push_str("</ul>\n");
            }
            Block::Table(t, caption) => {
                out.push_str("<table><tr>");
                for h in &t.header {
                    out.push_str(&format!("<th>{}</th>", inline(h)));
                }
                out.push_str("</tr>\n");
                for r in &t.rows {
                    out.push_str("<tr>");
                    for c in r {
                        out.push_str(&format!("<td>{}</td>", inline(c)));
                    }
                    out.push_str("</tr>\n");
                }
                out.push_str("</table>\n");
                if !caption.is_empty() {
                    out.push_str(&format!("<div class=\"cap\">{}</div>\n", inline(caption)));
                }
            }
            Block::Figure(_, svg, caption) => {
                // The SVG's own XML declaration has no place inside HTML.
                let body = svg
                    .trim_start()
                    .strip_prefix("<?xml")
                    .and_then(|r| r.split_once("?>").map(|(_, s)| s))
                    .unwrap_or(svg);
                out.push_str(&format!(
                    "<figure>{body}<figcaption class=\"cap\">{}</figcaption></figure>\n",
                    inline(caption)
                ));
            }
        }
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Block> {
        let mut t = Table::new(&["model", "value"]);
        t.row(vec!["a|b".into(), "1 < 2".into()]);
        t.row(vec!["short".into()]);
        vec![
            Block::Heading(2, "Latency".into()),
            Block::Warning("software emulation".into()),
            Block::Para("see `runm` **now**".into()),
            Block::List(vec!["one".into()]),
            Block::Table(t, "host: PVM KVM".into()),
            Block::Figure(
                "x.svg".into(),
                "<?xml version=\"1.0\"?><svg></svg>".into(),
                "cap".into(),
            ),
        ]
    }

    #[test]
    fn markdown_tables_escape_pipes() {
        let md = markdown(&sample());
        assert!(md.starts_with("## Latency\n\n> **software emulation**\n\n"));
        assert!(md.contains("| model | value |\n| --- | --- |\n| a\\|b | 1 < 2 |\n| short |  |\n"));
        assert!(md.contains("\n*host: PVM KVM*\n"));
        assert!(md.contains("![cap](x.svg)\n\n*cap*\n"));
    }

    #[test]
    fn html_is_self_contained_and_escaped() {
        let h = html("R & D", &sample());
        assert!(h.contains("<title>R &amp; D</title>"));
        assert!(h.contains("<td>1 &lt; 2</td>"));
        assert!(h.contains("<p>see <code>runm</code> <strong>now</strong></p>"));
        assert!(
            h.contains("<figure><svg></svg>"),
            "inline SVG without its XML declaration"
        );
        assert!(!h.contains("src="), "nothing loaded from elsewhere");
        assert!(!h.contains("href="));
    }
}
