//! Every statement the analytics projection and replay send to the analytics database
//! (`read_models::analytics_sql::catalogue`) is parsed with sqlfluff's `redshift` dialect, and
//! refused if it uses a PostgreSQL-only construct the parser accepts anyway (sqlfluff's Redshift
//! grammar extends its PostgreSQL one, so `string_agg(...)` or `t::text` parse fine).
//!
//! sqlfluff comes from the local stack's Python venv (`scripts/emulators/requirements.txt`,
//! installed by `scripts/stack.sh up`); `ORDERPIPE_SQLFLUFF` names another executable.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use read_models::analytics_sql::{catalogue, NamedStatement};

/// Constructs PostgreSQL accepts and Redshift does not, which a parser cannot tell apart from
/// SQL Redshift has (a function name, a cast, a clause the shared grammar knows).
const POSTGRESQL_ONLY: &[(&str, &str)] = &[
    (
        "string_agg(",
        "string_agg (Redshift: LISTAGG, limited to 64 KB)",
    ),
    ("unnest(", "UNNEST of arrays"),
    ("jsonb", "JSONB"),
    (
        "::text",
        "a cast to TEXT (a whole row's text in PostgreSQL)",
    ),
    ("::uuid", "the UUID type"),
    ("= any(", "= ANY(array)"),
    ("[]", "array types"),
    ("for update", "SELECT ... FOR UPDATE"),
    ("on conflict", "INSERT ... ON CONFLICT"),
    ("except all", "EXCEPT ALL"),
    ("intersect all", "INTERSECT ALL"),
    (
        "truncate",
        "TRUNCATE (commits at once in Redshift, one table only)",
    ),
    ("serial", "SERIAL"),
    (
        "timestamptz",
        "TIMESTAMPTZ columns (the views store UTC wall time)",
    ),
];

fn sqlfluff() -> PathBuf {
    if let Some(path) = std::env::var_os("ORDERPIPE_SQLFLUFF") {
        return PathBuf::from(path);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let venvs = [
        std::env::var_os("ORDERPIPE_STACK_VENV").map(PathBuf::from),
        std::env::var_os("ORDERPIPE_STACK_DIR").map(|dir| PathBuf::from(dir).join("venv")),
        Some(repo.join(".stack/venv")),
    ];
    venvs
        .into_iter()
        .flatten()
        .map(|venv| venv.join("bin/sqlfluff"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "sqlfluff not found: run `scripts/stack.sh up` (it installs scripts/emulators/\
                 requirements.txt into the stack's venv) or set ORDERPIPE_SQLFLUFF"
            )
        })
}

/// Every statement refused, with why: sqlfluff's parse errors and the constructs above. Each
/// statement is a file of its own, so one unparsable statement cannot hide the others.
fn refused(label: &str, statements: &[NamedStatement]) -> Vec<String> {
    let dir = std::env::temp_dir().join(format!(
        "orderpipe-redshift-sql-{}-{label}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for statement in statements {
        std::fs::write(
            dir.join(format!("{}.sql", statement.name)),
            format!("{};\n", statement.sql),
        )
        .unwrap();
    }
    let output = Command::new(sqlfluff())
        .args(["lint", "--dialect", "redshift", "--format", "json"])
        // One cheap rule: the point is the parse, which runs whatever the rules.
        .args(["--rules", "CP01", "--nocolor"])
        .arg(&dir)
        .output()
        .expect("sqlfluff runs");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "sqlfluff printed no JSON report ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let mut refusals = Vec::new();
    for file in report.as_array().expect("a list of files") {
        let path = file["filepath"].as_str().unwrap_or_default();
        let name = Path::new(path)
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        for violation in file["violations"].as_array().into_iter().flatten() {
            if violation["code"] == "PRS" {
                refusals.push(format!(
                    "{name}: sqlfluff (redshift): {}",
                    violation["description"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    for statement in statements {
        let text = statement.sql.to_lowercase();
        for (construct, what) in POSTGRESQL_ONLY {
            if text.contains(construct) {
                refusals.push(format!("{}: PostgreSQL only: {what}", statement.name));
            }
        }
    }
    refusals.sort();
    refusals
}

#[test]
fn every_analytics_statement_is_redshift_sql() {
    let statements = catalogue();
    assert!(statements.len() > 50, "{} statements", statements.len());
    let refusals = refused("catalogue", &statements);
    assert!(
        refusals.is_empty(),
        "statements the analytics database would refuse on Redshift:\n{}\n(the SQL is in \
         crates/read/read-models/src/analytics_sql.rs)",
        refusals.join("\n")
    );
}

#[test]
fn the_check_refuses_postgresql_only_statements() {
    let statement = |name: &str, sql: &str| NamedStatement {
        name: name.into(),
        sql: sql.into(),
    };
    let postgresql_only = [
        statement(
            "upsert",
            "INSERT INTO applied_sequences VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        ),
        statement("except_all", "SELECT * FROM a EXCEPT ALL SELECT * FROM b"),
        statement(
            "row_checksum",
            "SELECT md5(string_agg(md5(t::text), '')) FROM fact_orders t",
        ),
        statement("truncate_two", "TRUNCATE fact_orders, fact_order_items"),
        statement("fine", "SELECT count(*) FROM fact_orders"),
    ];
    let refusals = refused("postgresql_only", &postgresql_only);
    for name in ["upsert", "except_all", "row_checksum", "truncate_two"] {
        assert!(
            refusals.iter().any(|r| r.starts_with(&format!("{name}:"))),
            "{name} passed: {refusals:#?}"
        );
    }
    assert!(
        !refusals.iter().any(|r| r.starts_with("fine:")),
        "{refusals:#?}"
    );
}
