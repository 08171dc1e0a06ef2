//! Tidy: rules over the whole source tree that a reviewer would otherwise repeat on every change
//! (after rust-analyzer's `tidy.rs`).
//!
//! It reads files and nothing else: no build, no network. It walks the repository from its root
//! (two levels above this crate), skipping `target/` and hidden directories, and checks:
//!
//! - `file-doc`: every `.rs` file under `crates/` opens with a `//!` comment;
//! - `engine-deps`: the engine's `[dependencies]` name no HTTP or command-line crate;
//! - `dangling-path`: docs and doc comments name only files the repository has;
//! - `engine-layers`: each module of the engine imports only from the layers below its own (or
//!   along the few edges within a layer that ARCHITECTURE.md draws).
//!
//! Every violation is printed with its `file:line`, and the test fails once, at the end, with the
//! count. It does not check style that rustfmt or clippy already check.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Crates the engine must not depend on: it is a library under every front door, and HTTP servers,
/// HTTP clients and argument parsing belong to the crates above it (server, sources, cli).
const ENGINE_FORBIDDEN_DEPS: &[&str] = &["reqwest", "axum", "hyper", "clap"];

/// The engine's modules by layer, lowest first (ARCHITECTURE.md, `crates/engine`): a module may
/// import from any lower layer, from itself, and within its layer only along [`ENGINE_SAME_LAYER`].
const ENGINE_LAYERS: &[&[&str]] = &[
    &["error", "config", "telemetry", "meta", "generation", "blocking", "fs", "tasks", "contain"],
    &["memory", "access", "quota", "single_flight", "sources", "spool"],
    &["store", "body", "namespaces"],
    &["read", "write", "directory", "uploads"],
    &["jobs", "derive", "images"],
    &["cache"],
];

/// The imports allowed within one layer, as (importer, imported).
const ENGINE_SAME_LAYER: &[(&str, &str)] = &[
    ("telemetry", "meta"),
    ("telemetry", "error"),
    ("blocking", "error"),
    ("contain", "error"),
    ("access", "memory"),
    ("spool", "quota"),
    ("namespaces", "store"),
    ("read", "directory"),
    ("write", "directory"),
    ("uploads", "directory"),
    ("images", "derive"),
];

/// Names the engine's root re-exports, by the module that defines them.
const ENGINE_ROOT_NAMES: &[(&str, &str)] = &[
    ("Error", "error"),
    ("CacheConfig", "config"),
    ("Read", "body"),
    ("ReadMeta", "meta"),
    ("Text", "meta"),
    ("Memo", "meta"),
    ("Tier", "meta"),
    ("Cache", "cache"),
];

/// Extensions of the files whose mentions `dangling-path` checks. Other names with dots in prose
/// (`config.toml`, `index.db`, `lookups.gen`) are files of a user's machine, not of the repository.
const CHECKED_EXTENSIONS: &[&str] = &["rs", "md", "sh", "py"];

/// One broken rule at one place.
struct Violation {
    rule: Rule,
    /// Path relative to the repository root.
    file: String,
    /// 1-based line.
    line: usize,
    what: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    FileDoc,
    EngineDeps,
    DanglingPath,
    EngineLayers,
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::FileDoc => "file-doc",
            Rule::EngineDeps => "engine-deps",
            Rule::DanglingPath => "dangling-path",
            Rule::EngineLayers => "engine-layers",
        }
    }

    /// What to do about a violation, printed once per broken rule.
    fn fix(self) -> &'static str {
        match self {
            Rule::FileDoc => {
                "start the file with a `//!` comment saying what it owns and what it does not do \
                 (the first non-empty line, before any `#![…]` attribute)"
            }
            Rule::EngineDeps => {
                "move the code that needs it to the crate that owns that concern (HTTP fetching to \
                 crates/sources, HTTP serving to crates/server, argument parsing to crates/cli), or \
                 use it only under [dev-dependencies]"
            }
            Rule::DanglingPath => {
                "point the link or mention at a file the repository has, or drop it; a document kept \
                 outside the repository (SPEC.md) is not named from inside it: say what it says instead"
            }
            Rule::EngineLayers => {
                "move what both need down to a layer below both (a helper that two layers need moves \
                 down, not sideways), or, for a new module, add it to ENGINE_LAYERS and to \
                 ARCHITECTURE.md's layer map"
            }
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: [{}] {}", self.file, self.line, self.rule.name(), self.what)
    }
}

/// The repository's files, found once and shared by the rules.
struct Repo {
    root: PathBuf,
    /// Every file, relative to the root, with `/` separators.
    files: Vec<String>,
    /// The same, for lookups.
    file_set: HashSet<String>,
    /// Every directory, relative to the root (the root itself is `""`).
    dirs: HashSet<String>,
    /// The file names (last segments) of every file.
    names: HashSet<String>,
}

impl Repo {
    fn load() -> Repo {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let root = root.canonicalize().unwrap_or_else(|e| panic!("cannot resolve {}: {e}", root.display()));
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
        assert!(manifest.contains("[workspace]"), "{} is not the workspace root", root.display());
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        Repo::new(root, files)
    }

    /// A repository of `files` (relative paths with `/` separators) and the directories holding them.
    fn new(root: PathBuf, mut files: Vec<String>) -> Repo {
        files.sort();
        let mut dirs = HashSet::from([String::new()]);
        let mut names = HashSet::new();
        for file in &files {
            let mut dir = file.as_str();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                dirs.insert(parent.to_owned());
                dir = parent;
            }
            names.insert(file.rsplit('/').next().unwrap_or(file).to_owned());
        }
        let file_set = files.iter().cloned().collect();
        Repo { root, files, file_set, dirs, names }
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.root.join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
    }

    /// Whether `rel` (relative to the root, maybe with `.` and `..` segments) is a file or directory
    /// of the repository. A path that climbs out of the root is not.
    fn has(&self, rel: &Path) -> bool {
        let mut parts: Vec<String> = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
                Component::ParentDir => {
                    if parts.pop().is_none() {
                        return false;
                    }
                }
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => return false,
            }
        }
        let joined = parts.join("/");
        self.file_set.contains(&joined) || self.dirs.contains(&joined)
    }
}

/// Collects the files under `dir` (relative to `root`), skipping `target/` and hidden entries.
fn walk(root: &Path, dir: &Path, files: &mut Vec<String>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type().unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()));
        if file_type.is_dir() {
            if name != "target" {
                walk(root, &path, files);
            }
        } else {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            files.push(rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"));
        }
    }
}

/// Rule `file-doc`: the first non-empty line of every `.rs` file under `crates/` starts with `//!`.
fn check_file_docs(repo: &Repo, out: &mut Vec<Violation>) {
    for file in repo.files.iter().filter(|f| f.starts_with("crates/") && f.ends_with(".rs")) {
        let text = repo.read(file);
        let first = text.lines().enumerate().find(|(_, l)| !l.trim().is_empty());
        match first {
            Some((_, line)) if line.trim_start().starts_with("//!") => {}
            Some((i, line)) => out.push(Violation {
                rule: Rule::FileDoc,
                file: file.clone(),
                line: i + 1,
                what: format!("the file opens with `{}`, not with a `//!` comment", shorten(line.trim())),
            }),
            None => out.push(Violation {
                rule: Rule::FileDoc,
                file: file.clone(),
                line: 1,
                what: "the file is empty; it has no `//!` comment".to_owned(),
            }),
        }
    }
}

/// Rule `engine-deps`: `crates/engine/Cargo.toml` names none of [`ENGINE_FORBIDDEN_DEPS`] under
/// `[dependencies]` (nor under a `[target.….dependencies]` table), by key or as a renamed
/// `package`.
fn check_engine_deps(repo: &Repo, out: &mut Vec<Violation>) {
    let file = "crates/engine/Cargo.toml";
    let text = repo.read(file);
    let manifest: toml::Table = text.parse().unwrap_or_else(|e| panic!("{file} does not parse: {e}"));
    let mut tables: Vec<(String, &toml::Table)> = Vec::new();
    if let Some(deps) = manifest.get("dependencies").and_then(|d| d.as_table()) {
        tables.push(("[dependencies]".to_owned(), deps));
    }
    for (cfg, target) in manifest.get("target").and_then(|t| t.as_table()).into_iter().flatten() {
        if let Some(deps) = target.get("dependencies").and_then(|d| d.as_table()) {
            tables.push((format!("[target.{cfg}.dependencies]"), deps));
        }
    }
    for (table, deps) in tables {
        for (key, spec) in deps {
            let package = spec.get("package").and_then(|p| p.as_str()).unwrap_or(key);
            if ENGINE_FORBIDDEN_DEPS.contains(&package) {
                let line = text
                    .lines()
                    .position(|l| {
                        let l = l.trim_start();
                        l.strip_prefix(key.as_str()).is_some_and(|rest| rest.starts_with(['.', ' ', '=']))
                    })
                    .map_or(1, |i| i + 1);
                out.push(Violation {
                    rule: Rule::EngineDeps,
                    file: file.to_owned(),
                    line,
                    what: format!("the engine depends on `{package}` in {table}"),
                });
            }
        }
    }
}

/// Rule `dangling-path`: in the `.md` files at the root and under `docs/`, and in the `//!` and
/// `///` comments of `.rs` files, every relative markdown link and every mention of a repository
/// file names a file (or directory) the repository has.
fn check_paths(repo: &Repo, out: &mut Vec<Violation>) {
    let mut seen = BTreeSet::new();
    for file in &repo.files {
        let is_doc = file.ends_with(".md") && (!file.contains('/') || file.starts_with("docs/"));
        let is_source = file.ends_with(".rs");
        if !is_doc && !is_source {
            continue;
        }
        let text = repo.read(file);
        for (i, line) in text.lines().enumerate() {
            let prose = if is_doc {
                line
            } else {
                let t = line.trim_start();
                match t.strip_prefix("//!").or_else(|| t.strip_prefix("///")) {
                    Some(comment) => comment,
                    None => continue,
                }
            };
            let broken_links =
                links(prose).into_iter().filter_map(|t| Some((check_link(repo, file, &t, is_source)?, t)));
            let broken_mentions = mentions(prose).into_iter().filter_map(|m| Some((check_mention(repo, file, &m)?, m)));
            // A path both linked and mentioned on one line is reported once.
            for (what, name) in broken_links.chain(broken_mentions) {
                if seen.insert((file.clone(), i, name)) {
                    out.push(Violation { rule: Rule::DanglingPath, file: file.clone(), line: i + 1, what });
                }
            }
        }
    }
}

/// The targets of the markdown links `[text](target)` and `[label]: target` in `line`.
fn links(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        targets.push(after[..end].to_owned());
        rest = &after[end..];
    }
    let trimmed = line.trim_start();
    if trimmed.starts_with('[')
        && let Some(at) = trimmed.find("]: ")
    {
        targets.push(trimmed[at + 3..].to_owned());
    }
    targets
        .into_iter()
        .map(|t| {
            // Drop a title (`(path "title")`), angle brackets and an anchor.
            let t = t.split_whitespace().next().unwrap_or("");
            let t = t.trim_start_matches('<').trim_end_matches('>');
            t.split('#').next().unwrap_or("").to_owned()
        })
        .collect()
}

/// Checks one link target; returns what is wrong, if anything.
fn check_link(repo: &Repo, file: &str, target: &str, is_source: bool) -> Option<String> {
    if target.is_empty() || target.contains("://") || target.starts_with("mailto:") || target.starts_with('/') {
        return None;
    }
    // In Rust doc comments, `[x](Foo)` and `[x](crate::foo)` are intra-doc links, not files.
    if is_source && (target.contains("::") || (!target.contains('/') && !has_checked_extension(target))) {
        return None;
    }
    let dir = parent(file);
    if repo.has(&Path::new(dir).join(target)) || (is_source && repo.has(Path::new(target))) {
        return None;
    }
    let from = if dir.is_empty() { "the repository root".to_owned() } else { format!("{dir}/") };
    Some(format!("link to `{target}`, which the repository does not have (resolved from {from})"))
}

/// Words of `line` that look like a repository file: a path or file name ending in one of
/// [`CHECKED_EXTENSIONS`]. Absolute paths, URLs and templated paths (`<data>/x.md`) are left out.
fn mentions(line: &str) -> Vec<String> {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/');
    let mut found = Vec::new();
    for (start, run) in runs(line, is_path_char) {
        let end = start + run.len();
        let before = line[..start].chars().next_back();
        let after = line[end..].chars().next();
        // `<data>/x.md`, `$DIR/x.sh`, `{a,b}/x.rs`, `*.rs`, `~/x.md`, `s3://b/x.md` and the like
        // are templates or places outside the repository.
        if matches!(before, Some('>' | '$' | '}' | '*' | '~' | ':' | '@' | '%'))
            || matches!(after, Some('<' | '{' | '*'))
        {
            continue;
        }
        let word = run.trim_end_matches('.');
        if word.starts_with('/') || word.starts_with('-') || !has_checked_extension(word) {
            continue;
        }
        let name = word.rsplit('/').next().unwrap_or(word);
        if name.starts_with('.') {
            continue;
        }
        found.push(word.to_owned());
    }
    found
}

/// The maximal runs of characters of `line` that satisfy `keep`, with their byte offsets.
fn runs(line: &str, keep: impl Fn(char) -> bool) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (keep(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, &line[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &line[s..]));
    }
    out
}

/// Checks one mentioned path or file name; returns what is wrong, if anything.
///
/// A path whose first segment is a directory at the repository's root (`crates/…`, `docs/…`,
/// `bench/…`) must exist from the root (or from the mentioning file's directory). Any other path or
/// bare name (`read.rs`, `directory/scan.rs`, `tests/it/main.rs`) is read relative to its crate:
/// it is accepted if the mentioning file's directory or crate has it, and, to keep false positives
/// out, if any file anywhere in the repository ends with it; only a name found nowhere is flagged.
fn check_mention(repo: &Repo, file: &str, word: &str) -> Option<String> {
    let word_path = Path::new(word);
    let dir = parent(file);
    if repo.has(&Path::new(dir).join(word_path)) {
        return None;
    }
    let first = word.split('/').next().unwrap_or("");
    let is_rooted = word.contains('/') && repo.dirs.contains(first);
    if is_rooted || word.starts_with("..") {
        if repo.has(word_path) {
            return None;
        }
        return Some(format!("`{word}` names a file the repository does not have"));
    }
    if let Some(krate) = crate_root(file) {
        for base in [krate.to_owned(), format!("{krate}/src")] {
            if repo.has(&Path::new(&base).join(word_path)) {
                return None;
            }
        }
    }
    let word = word.trim_start_matches("./");
    let found = if word.contains('/') {
        repo.has(Path::new(word)) || repo.files.iter().any(|f| f.ends_with(&format!("/{word}")))
    } else {
        repo.names.contains(word)
    };
    if found {
        return None;
    }
    Some(format!("`{word}` names a file found nowhere in the repository"))
}

/// `crates/<name>` for a file inside a crate.
fn crate_root(file: &str) -> Option<&str> {
    let rest = file.strip_prefix("crates/")?;
    let name_len = rest.find('/')?;
    Some(&file[.."crates/".len() + name_len])
}

fn parent(file: &str) -> &str {
    file.rsplit_once('/').map_or("", |(dir, _)| dir)
}

fn has_checked_extension(word: &str) -> bool {
    let name = word.rsplit('/').next().unwrap_or(word);
    name.rsplit_once('.').is_some_and(|(_, ext)| CHECKED_EXTENSIONS.contains(&ext))
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 60 { format!("{}…", s.chars().take(60).collect::<String>()) } else { s.to_owned() }
}

/// The layer of engine module `module`, if it has one.
fn engine_layer(module: &str) -> Option<usize> {
    ENGINE_LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The crate-internal modules a line of engine code names through `crate::` paths (`crate::a::b`,
/// `crate::{a, b::c}`, `crate::Error`, the last as the module that defines it).
fn crate_imports(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let names: Vec<&str> = match after.strip_prefix('{') {
            Some(group) => {
                let group = group.split('}').next().unwrap_or("");
                group.split(',').map(|item| item.trim().split("::").next().unwrap_or("").trim()).collect()
            }
            None => vec![after.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("")],
        };
        for name in names.into_iter().filter(|n| !n.is_empty() && *n != "self") {
            let module = ENGINE_ROOT_NAMES.iter().find(|(n, _)| *n == name).map_or(name, |(_, m)| *m);
            found.push(module.to_owned());
        }
        rest = after;
    }
    found
}

fn check_engine_layers(repo: &Repo, out: &mut Vec<Violation>) {
    for file in repo.files.iter().filter(|f| f.starts_with("crates/engine/src/") && f.ends_with(".rs")) {
        let rel = &file["crates/engine/src/".len()..];
        let module = rel.split('/').next().unwrap_or(rel).trim_end_matches(".rs");
        if module == "lib" {
            continue;
        }
        let Some(own) = engine_layer(module) else {
            let what = format!("engine module `{module}` is in no layer of ENGINE_LAYERS");
            out.push(Violation { rule: Rule::EngineLayers, file: file.clone(), line: 1, what });
            continue;
        };
        for (i, line) in repo.read(file).lines().enumerate() {
            for imported in crate_imports(line) {
                let allowed = match engine_layer(&imported) {
                    Some(layer) => {
                        layer < own || imported == module || ENGINE_SAME_LAYER.contains(&(module, imported.as_str()))
                    }
                    None => false,
                };
                if !allowed {
                    let what = match engine_layer(&imported) {
                        Some(layer) => format!("`{module}` (layer {own}) imports `{imported}` (layer {layer})"),
                        None => format!("`{module}` imports `crate::{imported}`, which is in no layer"),
                    };
                    out.push(Violation { rule: Rule::EngineLayers, file: file.clone(), line: i + 1, what });
                }
            }
        }
    }
}

#[test]
fn crate_imports_are_read_from_paths_groups_and_root_names() {
    assert_eq!(crate_imports("use crate::store::{Origin, Store};"), ["store"]);
    assert_eq!(crate_imports("use crate::{Error, telemetry};"), ["error", "telemetry"]);
    assert_eq!(crate_imports("    let q = crate::quota::Hold::new(x); // crate::read is not code"), ["quota"]);
    assert_eq!(crate_imports("use crate::{CacheConfig, Read, spool::Phase};"), ["config", "body", "spool"]);
    assert!(crate_imports("use super::Reads;").is_empty());
}

#[test]
fn tidy() {
    let repo = Repo::load();
    let mut violations = Vec::new();
    check_file_docs(&repo, &mut violations);
    check_engine_deps(&repo, &mut violations);
    check_paths(&repo, &mut violations);
    check_engine_layers(&repo, &mut violations);
    if violations.is_empty() {
        return;
    }
    violations.sort_by(|a, b| (a.rule, &a.file, a.line).cmp(&(b.rule, &b.file, b.line)));
    let rules: BTreeSet<Rule> = violations.iter().map(|v| v.rule).collect();
    let mut report = String::new();
    for v in &violations {
        report.push_str(&format!("{v}\n"));
    }
    report.push('\n');
    for rule in rules {
        let n = violations.iter().filter(|v| v.rule == rule).count();
        report.push_str(&format!("{n} × [{}]: fix: {}\n", rule.name(), rule.fix()));
    }
    panic!("tidy: {} violation(s) in {}\n\n{report}", violations.len(), repo.root.display());
}

/// Checks that `line` mentions exactly the paths `expect` (as `mentions` finds them).
fn check_mentions(line: &str, expect: &[&str]) {
    assert_eq!(mentions(line), expect, "mentions in {line:?}");
}

#[test]
fn mentions_are_repository_paths_and_file_names() {
    check_mentions("see docs/design.md.", &["docs/design.md"]);
    check_mentions("The read path (SPEC.md): resolve", &["SPEC.md"]);
    check_mentions("`crates/engine/src/read_path.rs:42` and `scan.rs`", &["crates/engine/src/read_path.rs", "scan.rs"]);
    check_mentions("`./bench/run.sh --quick`", &["./bench/run.sh"]);
    // Templates, URLs, places outside the repository and other kinds of files are not mentions.
    check_mentions("`<data>/lookups.gen`, `<data>/x.md`, `$DIR/run.sh`, s3://bucket/a.md", &[]);
    check_mentions("`*.rs`, `{a,b}.rs`, `/etc/x.md`, `~/notes.md`, `.hidden.md`", &[]);
    check_mentions("`config.toml`, `index.db`, `Cargo.toml`", &[]);
}

#[test]
fn links_drop_titles_and_anchors() {
    assert_eq!(links("[design](docs/design.md#resets \"Resets\") and [x](<a.md>)"), ["docs/design.md", "a.md"]);
    assert_eq!(links("[spec]: ../SPEC.md"), ["../SPEC.md"]);
}

/// Checks what `check_mention` says of `word` mentioned in `file`: `None` if it resolves, else a
/// message containing `expect`.
fn check_resolution(repo: &Repo, file: &str, word: &str, expect: Option<&str>) {
    let got = check_mention(repo, file, word);
    match (expect, &got) {
        (None, None) => {}
        (Some(e), Some(msg)) if msg.contains(e) => {}
        _ => panic!("{word:?} in {file}: expected {expect:?}, got {got:?}"),
    }
}

#[test]
fn mentions_resolve_from_the_root_the_crate_or_anywhere() {
    let files = [
        "README.md",
        "docs/design.md",
        "bench/run.sh",
        "crates/engine/src/lib.rs",
        "crates/engine/src/directory/scan.rs",
    ];
    let repo = Repo::new(PathBuf::from("/repo"), files.map(str::to_owned).to_vec());
    let lib = "crates/engine/src/lib.rs";
    check_resolution(&repo, lib, "docs/design.md", None);
    check_resolution(&repo, lib, "scan.rs", None);
    check_resolution(&repo, lib, "directory/scan.rs", None);
    check_resolution(&repo, lib, "src/lib.rs", None);
    check_resolution(&repo, "README.md", "./bench/run.sh", None);
    check_resolution(&repo, "docs/design.md", "../README.md", None);
    check_resolution(&repo, lib, "SPEC.md", Some("found nowhere"));
    check_resolution(&repo, lib, "walker.rs", Some("found nowhere"));
    check_resolution(&repo, lib, "crates/engine/src/scan.rs", Some("does not have"));
    check_resolution(&repo, "docs/design.md", "../SPEC.md", Some("does not have"));
}

#[test]
fn each_rule_flags_its_violation_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("README.md", "See [the design](docs/design.md) and [gone](docs/gone.md).\n");
    write(
        "crates/engine/Cargo.toml",
        "[package]\nname = \"e\"\n\n[dependencies]\nbytes = \"1\"\nreqwest.workspace = true\nweb = { package = \"axum\", version = \"0.8\" }\n\n[dev-dependencies]\nhyper = \"1\"\n",
    );
    write("docs/design.md", "# Design\n");
    write("crates/engine/src/lib.rs", "//! The engine (see `read_path.rs`).\n");
    write("crates/engine/src/read_path.rs", "\n#![allow(unused)]\n//! The read path (SPEC.md).\n");
    let files = [
        "README.md",
        "docs/design.md",
        "crates/engine/Cargo.toml",
        "crates/engine/src/lib.rs",
        "crates/engine/src/read_path.rs",
    ];
    let repo = Repo::new(dir.path().to_owned(), files.map(str::to_owned).to_vec());
    let mut out = Vec::new();
    check_file_docs(&repo, &mut out);
    check_engine_deps(&repo, &mut out);
    check_paths(&repo, &mut out);
    let got: Vec<String> = out.iter().map(|v| format!("{}:{} {}", v.file, v.line, v.rule.name())).collect();
    assert_eq!(
        got,
        [
            "crates/engine/src/read_path.rs:2 file-doc",
            "crates/engine/Cargo.toml:6 engine-deps",
            "crates/engine/Cargo.toml:7 engine-deps",
            "README.md:1 dangling-path",
            "crates/engine/src/read_path.rs:3 dangling-path",
        ],
        "{}",
        out.iter().map(|v| format!("{v}\n")).collect::<String>()
    );
}
