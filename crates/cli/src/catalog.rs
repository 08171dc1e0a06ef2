//! The catalog of settings: every setting, with its config-file key, its flag, its `TIERCACHE_*`
//! variables, whether it is a secret, and its doc comment, read from the settings' own
//! declarations: the keys their derived `Deserialize` reads, the arguments their derived clap
//! `Args` declare, and the `///` comments and field order of `settings.rs` itself (compiled in).
//! `config check` and `config example` list settings from here, so a setting added to a settings
//! struct appears in both without being written down again.
//!
//! It neither resolves settings (`config.rs` does) nor prints anything (`commands/config.rs`).

use clap::{Args, Command};
use serde::de::DeserializeOwned;

use crate::config::{self, VARIABLES, Variable};
use crate::settings::{EngineSettings, GlobalSettings, ReconcileSettings, ServeSettings};

/// The text of `settings.rs`, for its doc comments and field order.
const SETTINGS_RS: &str = include_str!("settings.rs");
/// The text of `config.rs`, for the doc comments of the file's `[namespaces.*]` tables.
const CONFIG_RS: &str = include_str!("config.rs");

/// One group of settings: one settings struct.
#[derive(Debug)]
pub(crate) struct Part {
    /// Who reads them, for headings: `every command`, `serve`, ….
    pub(crate) title: &'static str,
    pub(crate) settings: Vec<Setting>,
}

/// One setting: one field of a settings struct.
#[derive(Debug, Clone)]
pub(crate) struct Setting {
    /// The field's name: its key in the file (if it has one) and its clap argument's id.
    pub(crate) key: &'static str,
    /// Its type, as written.
    pub(crate) ty: &'static str,
    /// Whether the file may set it (a flag-only switch, like `--no-cache`, may not).
    pub(crate) in_file: bool,
    /// `--long`, if it has a flag.
    pub(crate) flag: Option<String>,
    /// The variable clap reads for it, if any.
    pub(crate) env: Option<String>,
    /// The variables `config.rs` reads for it itself (a secret's, which has no flag).
    pub(crate) variables: Vec<&'static Variable>,
    /// Shown as `(set)`, never as its value.
    pub(crate) is_secret: bool,
    /// The doc comment's lines.
    pub(crate) doc: Vec<&'static str>,
}

impl Setting {
    /// The text of the doc comment's `[default: …]`, if it has one.
    pub(crate) fn default_text(&self) -> Option<String> {
        let doc = self.doc.join(" ");
        let start = doc.find("[default: ")? + "[default: ".len();
        let len = doc[start..].find(']')?;
        Some(doc[start..start + len].to_owned())
    }

    /// Its default: the doc comment's `[default: …]`, else `false` for a switch (a `bool`,
    /// which is off unless set).
    pub(crate) fn default_value(&self) -> Option<String> {
        self.default_text().or_else(|| (self.ty == "bool").then(|| "false".to_owned()))
    }

    /// The values the doc comment gives as examples, in order: its default, then each `e.g. X`.
    pub(crate) fn doc_examples(&self) -> Vec<String> {
        let doc = self.doc.join(" ");
        let mut out: Vec<String> = self.default_value().into_iter().collect();
        for (at, _) in doc.match_indices("e.g. ") {
            let rest = &doc[at + "e.g. ".len()..];
            let end = rest.find([' ', ',', ';', ')', ']']).unwrap_or(rest.len());
            let value = rest[..end].trim_matches('`').trim_end_matches([':', '.']);
            if !value.is_empty() {
                out.push(value.to_owned());
            }
        }
        out
    }
}

/// The settings structs' types named here and in `config::FileConfig::parse` (a test checks the
/// two agree), each with the title of who reads it.
pub(crate) fn parts() -> Vec<Part> {
    vec![
        part::<GlobalSettings>("every command"),
        part::<ServeSettings>("serve"),
        part::<ReconcileSettings>("serve --watch, and watch"),
        part::<EngineSettings>(
            "reading through the cache (flags of serve, get, warm, mount, derive; the file for every command)",
        ),
    ]
}

/// Every setting of every part, in order.
pub(crate) fn settings() -> Vec<Setting> {
    parts().into_iter().flat_map(|p| p.settings).collect()
}

/// The part made of settings struct `T`.
fn part<T: Args + DeserializeOwned>(title: &'static str) -> Part {
    let name = std::any::type_name::<T>().rsplit("::").next().unwrap_or_default();
    let keys = config::keys_of::<T>();
    let command = T::augment_args(Command::new("settings"));
    let settings = fields(SETTINGS_RS, name)
        .into_iter()
        .map(|field| {
            let arg = command.get_arguments().find(|a| a.get_id() == field.name);
            let variables: Vec<&'static Variable> = VARIABLES.iter().filter(|v| v.key == field.name).collect();
            Setting {
                key: field.name,
                ty: field.ty,
                in_file: keys.contains(&field.name),
                flag: arg.and_then(|a| a.get_long()).map(|l| format!("--{l}")),
                env: arg.and_then(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()),
                is_secret: arg.is_some_and(|a| a.is_hide_env_values_set())
                    || variables.iter().any(|v| v.is_secret)
                    || SECRET_TYPES.iter().any(|t| field.ty.contains(t)),
                variables,
                doc: field.doc,
            }
        })
        .collect();
    Part { title, settings }
}

/// The types that hold secrets (settings.rs prints them without their secrets): a setting of one
/// of them is never shown.
const SECRET_TYPES: [&str; 2] = ["Tokens", "S3File"];

/// One field of a struct, as declared.
#[derive(Debug)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    /// Its type, as written.
    pub(crate) ty: &'static str,
    /// Its `///` lines, without the slashes.
    pub(crate) doc: Vec<&'static str>,
}

/// The fields of `pub(crate) struct {name}` in `source`, in order, each with its doc comment.
///
/// The declarations are rustfmt's: one field a line, `pub(crate) name: Type,`, after its `///`
/// lines and attributes; the struct ends at a `}` alone at the start of a line.
pub(crate) fn fields(source: &'static str, name: &str) -> Vec<Field> {
    let header = format!("pub(crate) struct {name} {{");
    let mut lines = source.lines().skip_while(|l| l.trim() != header).skip(1);
    let mut out = Vec::new();
    let mut doc = Vec::new();
    for line in lines.by_ref() {
        if line == "}" {
            break;
        }
        let trimmed = line.trim();
        if let Some(text) = trimmed.strip_prefix("///") {
            doc.push(text.strip_prefix(' ').unwrap_or(text));
        } else if let Some(decl) = trimmed.strip_prefix("pub(crate) ")
            && let Some((field, ty)) = decl.split_once(": ")
        {
            out.push(Field { name: field, ty: ty.trim_end_matches(','), doc: std::mem::take(&mut doc) });
        }
    }
    out
}

/// The fields of the file's `[namespaces.NAME]` tables (`config::FileNamespace`).
pub(crate) fn namespace_fields() -> Vec<Field> {
    fields(CONFIG_RS, "FileNamespace")
}

/// The fields of the file's `[[s3.keys]]` tables (`settings::S3KeyFile`).
pub(crate) fn s3_key_fields() -> Vec<Field> {
    fields(SETTINGS_RS, "S3KeyFile")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FileNamespace;
    use crate::settings::S3KeyFile;

    /// Every key the file accepts is a setting of the catalog (or the namespaces' table), and
    /// every setting is a key or a flag: nothing is missed by reading the declarations.
    #[test]
    fn the_catalog_holds_every_key_and_every_flag() {
        let settings = settings();
        let keys: Vec<&str> = settings.iter().filter(|s| s.in_file).map(|s| s.key).collect();
        let mut want: Vec<&str> = config::known_keys().iter().copied().filter(|k| *k != "namespaces").collect();
        let mut got = keys.clone();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want, "the catalog's keys and the file's");
        for s in &settings {
            assert!(s.in_file || s.flag.is_some(), "{} is neither a key nor a flag", s.key);
            assert!(!s.doc.is_empty(), "{} has no doc comment", s.key);
        }
        // Every argument of the settings structs is a field found here.
        let args = [
            GlobalSettings::augment_args(Command::new("x")),
            ServeSettings::augment_args(Command::new("x")),
            ReconcileSettings::augment_args(Command::new("x")),
            EngineSettings::augment_args(Command::new("x")),
        ];
        for a in args.iter().flat_map(|c| c.get_arguments()) {
            assert!(settings.iter().any(|s| s.key == a.get_id()), "argument {} has no field", a.get_id());
        }
        for v in VARIABLES {
            assert!(settings.iter().any(|s| s.key == v.key), "{} sets {}, which is no setting", v.name, v.key);
        }
        let names = |f: Vec<Field>| f.into_iter().map(|f| f.name).collect::<Vec<_>>();
        assert_eq!(names(namespace_fields()), config::keys_of::<FileNamespace>());
        assert_eq!(names(s3_key_fields()), config::keys_of::<S3KeyFile>());
    }

    #[test]
    fn secrets_are_known_as_such() {
        let settings = settings();
        let secret = |k: &str| settings.iter().find(|s| s.key == k).unwrap().is_secret;
        for k in ["admin_token", "write_token", "read_token", "s3"] {
            assert!(secret(k), "{k} is a secret");
        }
        for k in ["listen", "data_dir", "shared", "disk_quota", "owner_hook"] {
            assert!(!secret(k), "{k} is no secret");
        }
    }

    #[test]
    fn defaults_and_examples_come_from_the_doc() {
        let s = Setting {
            key: "x",
            ty: "Option<ByteSize>",
            in_file: true,
            flag: None,
            env: None,
            variables: Vec::new(),
            is_secret: false,
            doc: vec!["Most bytes, e.g. 10GiB or 500MB; least", "valuable first [default: no limit]"],
        };
        assert_eq!(s.default_text().as_deref(), Some("no limit"));
        assert_eq!(s.doc_examples(), ["no limit", "10GiB"]);
        let f = fields(
            "pub(crate) struct A {\n    /// One\n    /// two.\n    #[arg(long)]\n    // why\n    pub(crate) a_b: Option<Vec<String>>,\n    pub(crate) c: bool,\n}\npub(crate) struct B {\n    pub(crate) d: u8,\n}\n",
            "A",
        );
        let got: Vec<_> = f.iter().map(|f| (f.name, f.ty, f.doc.clone())).collect();
        assert_eq!(got, [("a_b", "Option<Vec<String>>", vec!["One", "two."]), ("c", "bool", vec![])]);
    }
}
