//! `tiercache man`: the man page of every command on one page (roff, on standard output): the
//! synopsis, description and options of `tiercache`, then those of each command, nested ones
//! included, then the exit status, the variables that have no flag, and the files.
//!
//! clap_mangen renders each command's sections from clap's own definition; this only lays them
//! out as one page, where each command is a subsection. It knows no command by name.

use std::io::Write as _;

use anyhow::Result;
use clap::CommandFactory;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use crate::args::Cli;
use crate::config::VARIABLES;

/// `tiercache man`.
pub(crate) fn man() -> Result<u8> {
    std::io::stdout().lock().write_all(page()?.as_bytes())?;
    Ok(0)
}

/// The page's DESCRIPTION: what `--help` is too short to say.
const DESCRIPTION: &str = "tiercache sits between programs that read large or many files and the slow places \
those files live (a web server, a local directory, an S3 bucket, an OCI registry), and makes the second read \
and the second node fast, keeping a small SQLite index of everything it holds. A read tries the memory tier, \
the disk tier, the shared cluster tier, then the namespace's source, which is fetched from once however many \
readers wait; every blob is verified against its digest before it is served.

tiercache serve runs the HTTP API (and the S3 API and the registry mirror); the other commands work on the \
same data directory, beside a running server or without one.

Every setting is a flag, a TIERCACHE_* variable and a key of the TOML config file, resolved in that order, \
then the default. tiercache config check shows each effective setting and where it came from; tiercache \
config example prints every key the file takes.";

/// The whole page.
pub(crate) fn page() -> Result<String> {
    let cli = Cli::command().disable_help_subcommand(true);
    let version = cli.get_version().unwrap_or_default().to_owned();
    // The description starts with the name, which the NAME line says already.
    let about = cli.get_about().map(ToString::to_string).unwrap_or_default();
    let about = about.strip_prefix("tiercache: ").unwrap_or(&about).to_owned();
    let top = Man::new(cli.clone().about(about).long_about(DESCRIPTION))
        .title("TIERCACHE")
        .manual("User Commands")
        .source(format!("tiercache {version}"));
    let mut out = String::new();
    // The title carries roff's preamble; every later piece is rendered without it.
    let mut title = Vec::new();
    top.render_title(&mut title)?;
    out.push_str(&String::from_utf8(title)?);
    out.push_str(&piece(|w| top.render_name_section(w))?);
    out.push_str(&piece(|w| top.render_synopsis_section(w))?);
    out.push_str(&piece(|w| top.render_description_section(w))?);
    out.push_str(&piece(|w| top.render_options_section(w))?);
    out.push_str(&roff(Roff::new().control("SH", ["COMMANDS"]))?);
    for sub in visible(&cli) {
        commands(&mut out, sub, "tiercache")?;
    }
    out.push_str(&roff(&exit_status())?);
    out.push_str(&roff(&environment())?);
    out.push_str(&roff(&files())?);
    out.push_str(&piece(|w| top.render_version_section(w))?);
    Ok(ascii(&out))
}

/// `text` with every character beyond ASCII written as roff's `\[uXXXX]`: the help texts say
/// `…` and `≤`, which troff reads as bytes of no character unless a preprocessor converts them
/// first (man-db's does; groff alone, mandoc and others may not).
fn ascii(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out
}

/// The subcommands of `cmd` a user sees, in their order.
fn visible(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// Appends `cmd`'s subsection (called `parent cmd`), then its subcommands'.
fn commands(out: &mut String, cmd: &clap::Command, parent: &str) -> Result<()> {
    let name = format!("{parent} {}", cmd.get_name());
    // Every command's `--help` and the global options are said once, at the top.
    let shown =
        cmd.clone().bin_name(&name).disable_help_flag(true).disable_version_flag(true).disable_help_subcommand(true);
    let man = Man::new(shown);
    out.push_str(&roff(Roff::new().control("SS", [name.as_str()]))?);
    out.push_str(&demoted(&piece(|w| man.render_synopsis_section(w))?));
    out.push_str(&roff(Roff::new().control("PP", []))?);
    out.push_str(&demoted(&piece(|w| man.render_description_section(w))?));
    out.push_str(&demoted(&piece(|w| man.render_options_section(w))?));
    for sub in visible(cmd) {
        commands(out, sub, &name)?;
    }
    Ok(())
}

/// One piece of the page rendered by clap_mangen, without roff's preamble (the title has it).
fn piece(render: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> Result<String> {
    let preamble = Roff::new().render();
    let mut buf = Vec::new();
    render(&mut buf)?;
    let text = String::from_utf8(buf)?;
    Ok(text.strip_prefix(&preamble).unwrap_or(&text).to_owned())
}

/// `r` rendered without roff's preamble, apostrophes kept upright as the preamble defines them.
fn roff(r: &Roff) -> Result<String> {
    piece(|w| r.to_writer(w))
}

/// A command's sections as parts of its subsection: the headings clap_mangen gives a page of its
/// own (`.SH SYNOPSIS`, `DESCRIPTION`, `OPTIONS`) left out, any other one made a subsection.
fn demoted(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        match line.strip_prefix(".SH ") {
            Some("SYNOPSIS" | "DESCRIPTION" | "OPTIONS") => {}
            Some(heading) => out.push_str(&format!(".SS {heading}\n")),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// EXIT STATUS, from `main.rs`'s list.
fn exit_status() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in crate::EXIT_CODES {
        r.control("TP", []).text([bold(code.to_string())]).text([roman(meaning)]);
    }
    r.control("PP", []).text([roman(
        "Any other status is not one of tiercache's answers: 101 is a panic (a bug), and a shell \
         reports 128+N for a process ended by signal N.",
    )]);
    r
}

/// ENVIRONMENT: the variables read without a flag (every option's variable is named with it).
fn environment() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["ENVIRONMENT"]);
    r.text([roman(
        "Each option above names its variable. A flag beats its variable, which beats the config file, \
         which beats the default. These variables have no flag:",
    )]);
    for v in VARIABLES {
        r.control("TP", []).text([bold(v.name)]).text([
            roman(format!("{} The config file's key: ", v.meaning)),
            italic(v.key),
            roman("."),
        ]);
    }
    for (name, meaning) in [
        ("RUST_LOG", "The log filter when neither --log nor TIERCACHE_LOG is given."),
        (
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY",
            "The S3 credentials of an s3:// shared tier, and of s3:// sources without keys of their own.",
        ),
        ("XDG_CONFIG_HOME, XDG_DATA_HOME, HOME", "Where the default config file and data directory are (FILES)."),
    ] {
        r.control("TP", []).text([bold(name)]).text([roman(meaning)]);
    }
    r
}

/// FILES: the config file and the data directory.
fn files() -> Roff {
    let mut r = Roff::new();
    r.control("SH", ["FILES"]);
    for (path, meaning) in [
        (
            "$XDG_CONFIG_HOME/tiercache/config.toml",
            "The config file, read if it exists and --config names no other (~/.config without the variable). \
             tiercache config example prints every key it takes; tiercache config check checks it.",
        ),
        (
            "$XDG_DATA_HOME/tiercache",
            "The data directory, unless --data-dir names another (~/.local/share without the variable): \
             index.db (the SQLite index), blobs/ (the disk tier), tmp/, namespaces/, settings.json.",
        ),
    ] {
        r.control("TP", []).text([italic(path)]).text([roman(meaning)]);
    }
    r
}
