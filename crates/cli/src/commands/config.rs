//! `tiercache config check` and `tiercache config example`: the configuration checked as `serve`
//! checks it, with every effective setting and where it came from; and an example config file
//! holding every key the file accepts.
//!
//! Both list the settings from `catalog.rs` (the settings structs' own declarations) and check
//! through `config.rs` (the functions `serve` calls), so neither can drift from what `serve`
//! does. Neither opens the data directory.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Serialize;

use crate::args::{Cli, ConfigCheckArgs};
use crate::catalog::{self, Field, Setting};
use crate::config::{self, FileConfig};
use crate::print_json;

/// Where an effective setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Source {
    /// A flag on the command line.
    Flag,
    /// A `TIERCACHE_*` variable.
    Env,
    /// The config file.
    File,
    /// The config file and a variable, together (an S3 key pair beside the file's keys).
    #[serde(rename = "file+env")]
    FileAndEnv,
    /// Nothing set it.
    Default,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::File => "file",
            Source::FileAndEnv => "file+env",
            Source::Default => "default",
        }
    }
}

/// One effective setting, as `config check` reports it.
#[derive(Debug, Serialize)]
struct Effective {
    key: &'static str,
    source: Source,
    /// As written where it came from (`(set)` for a secret); for a default, the documented one.
    value: Option<String>,
    /// The flag or variable that set it, or the file's path.
    from: Option<String>,
}

/// What `config check --json` prints.
#[derive(Debug, Serialize)]
struct Report {
    is_valid: bool,
    config_file: Option<String>,
    data_dir: String,
    settings: Vec<Effective>,
    /// The namespaces `serve` creates from the file's `[namespaces.*]` tables.
    namespaces: Vec<String>,
}

/// The value shown for a secret that is set.
const SET: &str = "(set)";

/// `config check`: loads the file, runs every check `serve` runs, and prints the effective
/// settings; exits 1 (through the error) when the configuration is invalid.
///
/// `matches` are the parsed command line's matches, the innermost first, so that a flag's
/// source (flag or variable) is the one clap recorded.
pub(crate) fn check(cli: &Cli, args: &ConfigCheckArgs, matches: &[&ArgMatches]) -> Result<u8> {
    let checked = FileConfig::load(cli.config.as_deref())
        .and_then(|file| config::check_serve(&cli.global, &args.serve, &file).map(|engine| (file, engine)));
    let (file, engine) = match checked {
        Ok(c) => c,
        Err(e) => {
            if args.json {
                print_json(&serde_json::json!({ "is_valid": false, "error": format!("{e:#}") }))?;
            }
            return Err(e.context("the configuration is invalid: serve would not start"));
        }
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let settings: Vec<Effective> = catalog::settings().iter().map(|s| effective(s, matches, &file, &env)).collect();
    let report = Report {
        is_valid: true,
        config_file: file.path.as_ref().map(|p| p.display().to_string()),
        data_dir: engine.data_dir.display().to_string(),
        settings,
        namespaces: file.namespaces.keys().cloned().collect(),
    };
    if args.json {
        print_json(&report)?;
        return Ok(0);
    }
    match (&report.config_file, config::default_config_path()) {
        (Some(path), _) => println!("config file: {path}"),
        (None, Some(default)) => println!("config file: none ({} does not exist)", default.display()),
        (None, None) => println!("config file: none"),
    }
    println!("data directory: {}", report.data_dir);
    println!("valid: these are the settings serve would start with");
    println!();
    let width = report.settings.iter().map(|s| s.key.len()).max().unwrap_or(0);
    println!("{:<width$}  {:<8}  {:<32}  VALUE", "SETTING", "SOURCE", "FROM");
    for s in &report.settings {
        println!(
            "{:<width$}  {:<8}  {:<32}  {}",
            s.key,
            s.source.as_str(),
            s.from.as_deref().unwrap_or("-"),
            s.value.as_deref().unwrap_or("-")
        );
    }
    if !report.namespaces.is_empty() {
        println!();
        println!("namespaces serve creates: {}", report.namespaces.join(", "));
    }
    Ok(0)
}

/// Where setting `s` came from and its value there: a flag or its variable (as clap recorded),
/// then a variable `config.rs` reads, then the file, then its default.
fn effective(
    s: &Setting,
    matches: &[&ArgMatches],
    file: &FileConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Effective {
    let shown = |value: String| {
        if s.is_secret { SET.to_owned() } else { tiercache_core::redact_url(&value).into_owned() }
    };
    for m in matches {
        // An id another command's arguments use is not this one's: look only where it is defined.
        if m.try_contains_id(s.key).is_err() {
            continue;
        }
        let source = match m.value_source(s.key) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env,
            _ => continue,
        };
        let raw: Vec<String> =
            m.get_raw(s.key).into_iter().flatten().map(|v| v.to_string_lossy().into_owned()).collect();
        let from = if source == Source::Flag { s.flag.clone() } else { s.env.clone() };
        return Effective { key: s.key, source, value: Some(shown(raw.join(","))), from };
    }
    let in_file = file.table.get(s.key);
    let set_vars: Vec<&str> = s.variables.iter().filter(|v| env(v.name).is_some()).map(|v| v.name).collect();
    if let Some(first) = set_vars.first() {
        let adds = s.variables.iter().all(|v| v.adds);
        if !(adds && in_file.is_some()) {
            let value = if s.variables.iter().any(|v| v.is_secret) {
                SET.to_owned()
            } else {
                shown(env(first).unwrap_or_default())
            };
            return Effective { key: s.key, source: Source::Env, value: Some(value), from: Some(set_vars.join(", ")) };
        }
        let path = file.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
        let from = format!("{path}, {}", set_vars.join(", "));
        return Effective { key: s.key, source: Source::FileAndEnv, value: Some(SET.to_owned()), from: Some(from) };
    }
    if let Some(value) = in_file {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let from = file.path.as_ref().map(|p| p.display().to_string());
        return Effective { key: s.key, source: Source::File, value: Some(shown(text)), from };
    }
    Effective { key: s.key, source: Source::Default, value: s.default_value(), from: None }
}

/// `config example`: prints the example config file.
pub(crate) fn example() -> Result<u8> {
    print!("{}", example_text()?);
    Ok(0)
}

/// Example values, as TOML, of the keys whose doc comment gives none the file takes: secrets,
/// which no doc should suggest, and the tables' keys. A value here is used before the doc's.
const EXAMPLES: &[(&str, &str)] = &[
    ("admin_token", r#""REPLACE-with-a-random-admin-token""#),
    ("write_token", r#"["REPLACE-with-a-random-write-token"]"#),
    ("read_token", r#""REPLACE-with-a-random-read-token""#),
    ("access_key", r#""AKEXAMPLE0001""#),
    ("secret_key", r#""REPLACE-with-a-random-secret-key""#),
];

/// The setting written as tables (`[[s3.keys]]`), after every other one: in TOML a table ends
/// the top-level keys.
const TABLE_SETTING: &str = "s3";

/// The example config file: every key the file accepts, commented out as `#key = value` after
/// its doc comment (`# …`), so that removing the `#` of a line sets that key.
pub(crate) fn example_text() -> Result<String> {
    let mut out = String::new();
    let w = &mut out;
    writeln!(w, "# tiercache config file (TOML): every key it accepts, commented out, each after its doc with")?;
    writeln!(w, "# its default or an example value. tiercache reads the file --config FILE (or TIERCACHE_CONFIG)")?;
    writeln!(w, "# names, else $XDG_CONFIG_HOME/tiercache/config.toml. A flag or a TIERCACHE_* variable beats the")?;
    writeln!(w, "# file; `tiercache config check` checks it and shows where each effective setting came from.")?;
    for part in catalog::parts() {
        writeln!(w)?;
        writeln!(w, "## Settings of {}", part.title)?;
        for s in part.settings.iter().filter(|s| s.in_file) {
            writeln!(w)?;
            for line in &s.doc {
                writeln!(w, "# {line}")?;
            }
            let names: Vec<&str> =
                s.flag.iter().chain(&s.env).map(String::as_str).chain(s.variables.iter().map(|v| v.name)).collect();
            if !names.is_empty() {
                writeln!(w, "# (also {})", names.join(", "))?;
            }
            if s.key == TABLE_SETTING {
                writeln!(w, "# (tables: [[{TABLE_SETTING}.keys]] below)")?;
                continue;
            }
            let value = example_value(s.key, &s.doc_examples(), |v| check_line(&format!("{} = {v}", s.key)))
                .with_context(|| format!("no example value of {} that the file takes", s.key))?;
            writeln!(w, "#{} = {value}", s.key)?;
        }
    }
    writeln!(w)?;
    writeln!(w, "## [[s3.keys]]: the S3 API's access keys (with s3_listen); one table per key")?;
    writeln!(w)?;
    table(w, &format!("[[{TABLE_SETTING}.keys]]"), &catalog::s3_key_fields())?;
    writeln!(w)?;
    writeln!(w, "## [namespaces.NAME]: namespaces serve creates when it starts (if they do not exist yet)")?;
    writeln!(w)?;
    table(w, "[namespaces.site]", &catalog::namespace_fields())?;
    Ok(out)
}

/// Writes table `header` with each of `fields` commented out.
fn table(w: &mut String, header: &str, fields: &[Field]) -> Result<()> {
    writeln!(w, "#{header}")?;
    for f in fields {
        for line in &f.doc {
            writeln!(w, "# {line}")?;
        }
        let doc = Setting {
            key: f.name,
            ty: f.ty,
            in_file: true,
            flag: None,
            env: None,
            variables: Vec::new(),
            is_secret: false,
            doc: f.doc.clone(),
        };
        // A table's keys are checked with the table's required keys beside them.
        let value = example_value(f.name, &doc.doc_examples(), |v| {
            let mut text = format!("{header}\n{} = {v}", f.name);
            for (k, example) in EXAMPLES.iter().filter(|(k, _)| fields.iter().any(|f| f.name == *k) && *k != f.name) {
                text.push_str(&format!("\n{k} = {example}"));
            }
            check_line(&text)
        })
        .with_context(|| format!("no example value of {} in {header} that the file takes", f.name))?;
        writeln!(w, "#{} = {value}", f.name)?;
    }
    Ok(())
}

/// The first of key's examples (from [`EXAMPLES`], then its doc's) written as TOML that
/// `is_valid` accepts: as it is (a number, a boolean, a list), else as a string, else as a
/// list of one string. Words that say there is no value are no examples (`none`, `all`, `one per
/// core`), nor is a path made of a variable.
fn example_value(key: &str, doc_examples: &[String], is_valid: impl Fn(&str) -> bool) -> Option<String> {
    let explicit = EXAMPLES.iter().filter(|(k, _)| *k == key).map(|(_, v)| (*v).to_owned());
    let from_doc = doc_examples
        .iter()
        .filter(|e| {
            !e.contains(char::is_whitespace)
                && !e.contains('$')
                && !["none", "off", "all", "never"].contains(&e.as_str())
        })
        .flat_map(|e| {
            let quoted = toml::Value::String(e.clone()).to_string();
            [e.clone(), quoted.clone(), format!("[{quoted}]")]
        });
    explicit.chain(from_doc).find(|v| is_valid(v))
}

/// Whether the file takes `text` (its keys, their values' types and ranges).
fn check_line(text: &str) -> bool {
    FileConfig::parse(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example with every `#key = value` line and table header uncommented.
    fn uncommented(example: &str) -> String {
        example
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every key the file takes is in the example, which parses back, uncommented, into a
    /// configuration `serve` would start with.
    #[test]
    fn the_example_holds_every_key_and_parses_back() {
        let example = example_text().unwrap();
        let on = uncommented(&example);
        for key in config::known_keys() {
            let present = on.lines().any(|l| {
                l.starts_with(&format!("{key} = "))
                    || l.starts_with(&format!("[[{key}."))
                    || l.starts_with(&format!("[{key}."))
            });
            assert!(present, "{key} is not in the example:\n{example}");
        }
        for f in catalog::s3_key_fields().iter().chain(&catalog::namespace_fields()) {
            assert!(on.lines().any(|l| l.starts_with(&format!("{} = ", f.name))), "{} is not in the example", f.name);
        }
        assert!(FileConfig::parse(&example).unwrap().table.is_empty(), "everything is commented out");
        let file = FileConfig::parse(&on).unwrap_or_else(|e| panic!("{e}\n{on}"));
        for key in config::known_keys() {
            assert!(file.table.contains_key(*key), "{key} is set by the uncommented example");
        }
        let args = crate::args::ServeArgs::default();
        config::check_serve(&crate::settings::GlobalSettings::default(), &args, &file).unwrap();
    }
}
