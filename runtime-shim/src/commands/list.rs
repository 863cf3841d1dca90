//! `runm list [--format table|json] [--quiet]`: the containers under the root.

use crate::cli::{ListArgs, ListFormat};
use crate::commands::Ctx;
use crate::error::RunmError;
use crate::state::{list_ids, ContainerDir, State};

fn row(st: &State) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": st.oci_version,
        "id": st.id,
        "pid": st.pid,
        "status": st.status,
        "bundle": st.bundle,
        "rootfs": st.runm.rootfs,
        "created": st.runm.created,
        "annotations": st.annotations,
        "owner": owner_name(st.runm.owner),
    })
}

/// The user name for `uid` from /etc/passwd, else the number.
fn owner_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

/// Left-aligned columns, two spaces apart.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The command.
pub fn run(ctx: &Ctx, a: ListArgs) -> Result<i32, RunmError> {
    let mut states = Vec::new();
    for id in list_ids(&ctx.root)? {
        let Ok(dir) = ContainerDir::new(&ctx.root, &id) else {
            continue;
        };
        // A directory without a state (a create that just began) is skipped.
        if let Ok(st) = ctx.load(&dir) {
            states.push(st);
        }
    }
    if a.quiet {
        for st in &states {
            println!("{}", st.id);
        }
        return Ok(0);
    }
    match a.format {
        ListFormat::Json => {
            let rows: Vec<_> = states.iter().map(row).collect();
            println!("{}", serde_json::Value::Array(rows));
        }
        ListFormat::Table => {
            let mut rows = vec![["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()];
            for st in &states {
                rows.push(vec![
                    st.id.clone(),
                    st.pid.to_string(),
                    st.status.to_string(),
                    st.bundle.display().to_string(),
                    st.runm.created.clone(),
                    owner_name(st.runm.owner),
                ]);
            }
            print!("{}", table(&rows));
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let rows = vec![
            vec!["ID".to_string(), "PID".to_string(), "STATUS".to_string()],
            vec![
                "long-id".to_string(),
                "7".to_string(),
                "running".to_string(),
            ],
        ];
        assert_eq!(
            table(&rows),
            "ID       PID  STATUS\nlong-id  7    running\n"
        );
        assert_eq!(owner_name(0), "root");
    }
}
